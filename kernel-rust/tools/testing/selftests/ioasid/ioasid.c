// SPDX-License-Identifier: GPL-2.0-only
/*
 * Tests of /dev/ioasid, the Rust implementation of the iommufd ABI.
 *
 * /dev/ioasid promises iommufd's ABI: the same ioctls, structure layouts and
 * error codes as /dev/iommu. These tests are written to iommufd's semantics
 * (tools/testing/selftests/iommu/iommufd.c, no_domain variant: an IOAS with
 * no device attached) and run against /dev/ioasid. Tests of ioctls the
 * running kernel's /dev/ioasid does not implement yet (ENOTTY) are skipped
 * with that reason, so they start running as soon as the ioctl lands.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <linux/ioasid.h>

#include "kselftest_harness.h"

#ifndef offsetofend
#define offsetofend(TYPE, MEMBER) \
	(offsetof(TYPE, MEMBER) + sizeof(((TYPE *)0)->MEMBER))
#endif

/*
 * The device under test. IOASID_DEV=/dev/iommu in the environment runs the
 * same tests against mainline iommufd, which validates their expectations.
 */
static const char *dev_path(void)
{
	const char *p = getenv("IOASID_DEV");

	return p && *p ? p : "/dev/ioasid";
}

static unsigned long PAGE_SIZE;
#define BUFFER_PAGES 16
static void *buffer;
static size_t BUFFER_SIZE;

/*
 * A kernel-chosen IOVA keeps the alignment of the user address up to the
 * huge page size, so the buffer is 2 MiB aligned (as in iommufd.c): the
 * alignment checks then do not depend on where mmap() happened to put it.
 */
#define BUFFER_ALIGN (2UL * 1024 * 1024)

static __attribute__((constructor)) void setup_sizes(void)
{
	void *aligned;

	PAGE_SIZE = sysconf(_SC_PAGE_SIZE);
	BUFFER_SIZE = PAGE_SIZE * BUFFER_PAGES;
	if (posix_memalign(&aligned, BUFFER_ALIGN, BUFFER_SIZE))
		return;
	buffer = mmap(aligned, BUFFER_SIZE, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

#define EXPECT_ERRNO(expected_errno, cmd)         \
	({                                        \
		ASSERT_EQ(-1, cmd);               \
		EXPECT_EQ(expected_errno, errno); \
	})

static int _test_ioctl_destroy(int fd, unsigned int id)
{
	struct iommu_destroy cmd = {
		.size = sizeof(cmd),
		.id = id,
	};

	return ioctl(fd, IOMMU_DESTROY, &cmd);
}

#define test_ioctl_destroy(id) ASSERT_EQ(0, _test_ioctl_destroy(self->fd, id))

static int _test_ioctl_ioas_alloc(int fd, __u32 *id)
{
	struct iommu_ioas_alloc cmd = {
		.size = sizeof(cmd),
	};
	int ret;

	ret = ioctl(fd, IOMMU_IOAS_ALLOC, &cmd);
	if (ret)
		return ret;
	*id = cmd.out_ioas_id;
	return 0;
}

#define test_ioctl_ioas_alloc(id)                                   \
	({                                                          \
		ASSERT_EQ(0, _test_ioctl_ioas_alloc(self->fd, id)); \
		ASSERT_NE(0, *(id));                                \
	})

static int _test_ioctl_ioas_map(int fd, unsigned int ioas_id, void *buf,
				size_t length, __u64 *iova, unsigned int flags)
{
	struct iommu_ioas_map cmd = {
		.size = sizeof(cmd),
		.flags = flags,
		.ioas_id = ioas_id,
		.user_va = (uintptr_t)buf,
		.length = length,
	};
	int ret;

	if (flags & IOMMU_IOAS_MAP_FIXED_IOVA)
		cmd.iova = *iova;

	ret = ioctl(fd, IOMMU_IOAS_MAP, &cmd);
	*iova = cmd.iova;
	return ret;
}

#define MAP_RW (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE)
#define MAP_FIXED_RW (IOMMU_IOAS_MAP_FIXED_IOVA | MAP_RW)

#define test_ioctl_ioas_map(buf, length, iova_p)                          \
	ASSERT_EQ(0, _test_ioctl_ioas_map(self->fd, self->ioas_id, buf,   \
					  length, iova_p, MAP_RW))

#define test_ioctl_ioas_map_fixed(buf, length, iova)                      \
	({                                                                \
		__u64 __iova = iova;                                      \
		ASSERT_EQ(0, _test_ioctl_ioas_map(self->fd, self->ioas_id, \
						  buf, length, &__iova,   \
						  MAP_FIXED_RW));         \
	})

#define test_err_ioctl_ioas_map_fixed(_errno, buf, length, iova)          \
	({                                                                \
		__u64 __iova = iova;                                      \
		EXPECT_ERRNO(_errno,                                      \
			     _test_ioctl_ioas_map(self->fd, self->ioas_id, \
						  buf, length, &__iova,   \
						  MAP_FIXED_RW));         \
	})

static int _test_ioctl_ioas_unmap(int fd, unsigned int ioas_id, uint64_t iova,
				  size_t length, uint64_t *out_len)
{
	struct iommu_ioas_unmap cmd = {
		.size = sizeof(cmd),
		.ioas_id = ioas_id,
		.iova = iova,
		.length = length,
	};
	int ret;

	ret = ioctl(fd, IOMMU_IOAS_UNMAP, &cmd);
	if (out_len)
		*out_len = cmd.length;
	return ret;
}

#define test_ioctl_ioas_unmap(iova, length)                                \
	ASSERT_EQ(0, _test_ioctl_ioas_unmap(self->fd, self->ioas_id, iova, \
					    length, NULL))
#define test_err_ioctl_ioas_unmap(_errno, iova, length)                      \
	EXPECT_ERRNO(_errno, _test_ioctl_ioas_unmap(self->fd, self->ioas_id, \
						    iova, length, NULL))

/*
 * Whether /dev/ioasid implements ioctl @nr: iommufd's dispatcher reads the
 * size member first, an unimplemented command then fails with ENOTTY before
 * the command is looked at. A zeroed command of the right size has no side
 * effect on any IOAS-half ioctl (it fails with EINVAL or ENOENT); for
 * IOMMU_OPTION an unknown option id makes it fail with EOPNOTSUPP.
 */
static bool ioctl_implemented(int fd, unsigned long nr, size_t size)
{
	union {
		__u32 size;
		struct iommu_option option;
		__u8 bytes[64];
	} cmd = {};

	cmd.size = size;
	if (nr == IOMMU_OPTION)
		cmd.option.option_id = UINT32_MAX;
	return !(ioctl(fd, nr, &cmd) == -1 && errno == ENOTTY);
}

#define REQUIRE_IOCTL(_nr, _struct)                                            \
	do {                                                                   \
		if (!ioctl_implemented(self->fd, _nr, sizeof(struct _struct))) \
			SKIP(return, #_nr " not implemented by %s (ENOTTY)",  \
			     dev_path());                                      \
	} while (0)

static int open_ioasid(struct __test_metadata *_metadata)
{
	int fd = open(dev_path(), O_RDWR);

	if (fd == -1 && errno == ENOENT)
		SKIP(return -1, "%s not present (CONFIG_IOASID?)", dev_path());
	ASSERT_NE(-1, fd);
	return fd;
}

FIXTURE(ioasid)
{
	int fd;
};

FIXTURE_SETUP(ioasid)
{
	self->fd = open_ioasid(_metadata);
}

FIXTURE_TEARDOWN(ioasid)
{
	if (self->fd != -1)
		EXPECT_EQ(0, close(self->fd));
}

TEST_F(ioasid, simple_close)
{
}

TEST_F(ioasid, cmd_fail)
{
	struct iommu_destroy cmd = { .size = sizeof(cmd), .id = 0 };

	/* object id is invalid */
	EXPECT_ERRNO(ENOENT, _test_ioctl_destroy(self->fd, 0));
	/* Bad pointer */
	EXPECT_ERRNO(EFAULT, ioctl(self->fd, IOMMU_DESTROY, NULL));
	/* Unknown ioctl, below and above iommufd's command range */
	EXPECT_ERRNO(ENOTTY,
		     ioctl(self->fd, _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE - 1),
			   &cmd));
	EXPECT_ERRNO(ENOTTY, ioctl(self->fd, _IO(IOMMUFD_TYPE, 0xff), &cmd));
	/* An iommufd command number with a size encoded is not iommufd's */
	EXPECT_ERRNO(ENOTTY,
		     ioctl(self->fd,
			   _IOWR(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY,
				 struct iommu_destroy),
			   &cmd));
}

/*
 * As iommufd.c's cmd_length: a size below the first version of the struct
 * fails with EINVAL, a bigger struct with non-zero trailing bytes with E2BIG,
 * and a bigger struct with zero trailing bytes behaves like the exact size.
 */
#define TEST_LENGTH(_struct, _ioctl, _last)                              \
	{                                                                \
		size_t min_size = offsetofend(struct _struct, _last);    \
		struct {                                                 \
			struct _struct cmd;                              \
			uint8_t extra;                                   \
		} cmd = { .cmd = { .size = min_size - 1 },               \
			  .extra = UINT8_MAX };                          \
		int old_errno;                                           \
		int rc;                                                  \
									 \
		EXPECT_ERRNO(EINVAL, ioctl(self->fd, _ioctl, &cmd));     \
		cmd.cmd.size = sizeof(struct _struct) + 1;               \
		EXPECT_ERRNO(E2BIG, ioctl(self->fd, _ioctl, &cmd));      \
		cmd.cmd.size = sizeof(struct _struct);                   \
		rc = ioctl(self->fd, _ioctl, &cmd);                      \
		old_errno = errno;                                       \
		cmd.cmd.size = sizeof(struct _struct) + 1;               \
		cmd.extra = 0;                                           \
		if (rc) {                                                \
			EXPECT_ERRNO(old_errno,                          \
				     ioctl(self->fd, _ioctl, &cmd));     \
		} else {                                                 \
			ASSERT_EQ(0, ioctl(self->fd, _ioctl, &cmd));     \
		}                                                        \
	}

TEST_F(ioasid, cmd_length)
{
	TEST_LENGTH(iommu_destroy, IOMMU_DESTROY, id);
	TEST_LENGTH(iommu_ioas_alloc, IOMMU_IOAS_ALLOC, out_ioas_id);
}

TEST_F(ioasid, cmd_length_ioas)
{
	REQUIRE_IOCTL(IOMMU_IOAS_IOVA_RANGES, iommu_ioas_iova_ranges);
	REQUIRE_IOCTL(IOMMU_IOAS_ALLOW_IOVAS, iommu_ioas_allow_iovas);
	REQUIRE_IOCTL(IOMMU_IOAS_MAP, iommu_ioas_map);
	REQUIRE_IOCTL(IOMMU_IOAS_COPY, iommu_ioas_copy);
	REQUIRE_IOCTL(IOMMU_IOAS_UNMAP, iommu_ioas_unmap);
	REQUIRE_IOCTL(IOMMU_OPTION, iommu_option);
	REQUIRE_IOCTL(IOMMU_IOAS_MAP_FILE, iommu_ioas_map_file);

	TEST_LENGTH(iommu_ioas_iova_ranges, IOMMU_IOAS_IOVA_RANGES,
		    out_iova_alignment);
	TEST_LENGTH(iommu_ioas_allow_iovas, IOMMU_IOAS_ALLOW_IOVAS,
		    allowed_iovas);
	TEST_LENGTH(iommu_ioas_map, IOMMU_IOAS_MAP, iova);
	TEST_LENGTH(iommu_ioas_copy, IOMMU_IOAS_COPY, src_iova);
	TEST_LENGTH(iommu_ioas_unmap, IOMMU_IOAS_UNMAP, length);
	TEST_LENGTH(iommu_option, IOMMU_OPTION, val64);
	TEST_LENGTH(iommu_ioas_map_file, IOMMU_IOAS_MAP_FILE, iova);
}

#undef TEST_LENGTH

TEST_F(ioasid, cmd_ex_fail)
{
	struct {
		struct iommu_destroy cmd;
		__u64 future;
	} cmd = { .cmd = { .size = sizeof(cmd), .id = 0 } };

	/* object id is invalid and command is longer */
	EXPECT_ERRNO(ENOENT, ioctl(self->fd, IOMMU_DESTROY, &cmd));
	/* future area is non-zero */
	cmd.future = 1;
	EXPECT_ERRNO(E2BIG, ioctl(self->fd, IOMMU_DESTROY, &cmd));
	/* Original command "works" */
	cmd.cmd.size = sizeof(cmd.cmd);
	EXPECT_ERRNO(ENOENT, ioctl(self->fd, IOMMU_DESTROY, &cmd));
	/* Short command fails */
	cmd.cmd.size = sizeof(cmd.cmd) - 1;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_DESTROY, &cmd));
	/* Zero size fails */
	cmd.cmd.size = 0;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_DESTROY, &cmd));
}

TEST_F(ioasid, ioas_alloc_destroy)
{
	__u32 a, b;

	test_ioctl_ioas_alloc(&a);
	test_ioctl_ioas_alloc(&b);
	EXPECT_NE(a, b);
	test_ioctl_destroy(a);
	test_ioctl_destroy(b);
	EXPECT_ERRNO(ENOENT, _test_ioctl_destroy(self->fd, a));
	EXPECT_ERRNO(ENOENT, _test_ioctl_destroy(self->fd, b));
}

/* iommufd allocates ids with xa_alloc() from 1: the lowest free id. */
TEST_F(ioasid, ioas_alloc_ids)
{
	__u32 ids[4], again;
	int i;

	for (i = 0; i != 4; i++) {
		test_ioctl_ioas_alloc(&ids[i]);
		EXPECT_EQ(i + 1, ids[i]);
	}
	test_ioctl_destroy(ids[1]);
	test_ioctl_ioas_alloc(&again);
	EXPECT_EQ(ids[1], again);
	for (i = 0; i != 4; i++)
		test_ioctl_destroy(ids[i]);
}

TEST_F(ioasid, ioas_alloc_flags)
{
	struct iommu_ioas_alloc cmd = {
		.size = sizeof(cmd),
		.flags = 1,
	};

	EXPECT_ERRNO(EOPNOTSUPP, ioctl(self->fd, IOMMU_IOAS_ALLOC, &cmd));
	cmd.flags = 1U << 31;
	EXPECT_ERRNO(EOPNOTSUPP, ioctl(self->fd, IOMMU_IOAS_ALLOC, &cmd));
	/* Nothing was allocated: the next id is still 1. */
	cmd.flags = 0;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_ALLOC, &cmd));
	EXPECT_EQ(1, cmd.out_ioas_id);
}

/* A bigger struct with zero trailing bytes: the id is written back. */
TEST_F(ioasid, ioas_alloc_extended)
{
	struct {
		struct iommu_ioas_alloc cmd;
		__u8 future[12];
	} cmd = { .cmd = { .size = sizeof(cmd) } };

	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_ALLOC, &cmd));
	EXPECT_NE(0, cmd.cmd.out_ioas_id);
	test_ioctl_destroy(cmd.cmd.out_ioas_id);
	cmd.future[11] = 1;
	EXPECT_ERRNO(E2BIG, ioctl(self->fd, IOMMU_IOAS_ALLOC, &cmd));
}

TEST_F(ioasid, destroy_ids)
{
	EXPECT_ERRNO(ENOENT, _test_ioctl_destroy(self->fd, 0));
	EXPECT_ERRNO(ENOENT, _test_ioctl_destroy(self->fd, 1));
	EXPECT_ERRNO(ENOENT, _test_ioctl_destroy(self->fd, 0x7fffffff));
	EXPECT_ERRNO(ENOENT, _test_ioctl_destroy(self->fd, UINT32_MAX));
}

/* Objects of one file are invisible through another. */
TEST_F(ioasid, ids_are_per_file)
{
	__u32 id;
	int fd2;

	test_ioctl_ioas_alloc(&id);
	fd2 = open(dev_path(), O_RDWR);
	ASSERT_NE(-1, fd2);
	EXPECT_ERRNO(ENOENT, _test_ioctl_destroy(fd2, id));
	EXPECT_EQ(0, close(fd2));
	test_ioctl_destroy(id);
}

/* Closing the file with live objects frees them. */
TEST_F(ioasid, ioas_auto_destroy)
{
	__u32 id;
	int i;

	for (i = 0; i != 8; i++)
		test_ioctl_ioas_alloc(&id);
}

/*
 * An IOAS, as iommufd.c's iommufd_ioas fixture in its no_domain variant.
 * Tests skip while /dev/ioasid does not implement IOMMU_IOAS_MAP.
 */
FIXTURE(ioasid_ioas)
{
	int fd;
	__u32 ioas_id;
	__u64 base_iova;
};

FIXTURE_SETUP(ioasid_ioas)
{
	self->fd = open_ioasid(_metadata);
	if (self->fd == -1)
		return;
	test_ioctl_ioas_alloc(&self->ioas_id);
	REQUIRE_IOCTL(IOMMU_IOAS_MAP, iommu_ioas_map);
	REQUIRE_IOCTL(IOMMU_IOAS_UNMAP, iommu_ioas_unmap);
	self->base_iova = 0;
	ASSERT_NE(NULL, buffer);
	ASSERT_NE(MAP_FAILED, buffer);
}

FIXTURE_TEARDOWN(ioasid_ioas)
{
	if (self->fd != -1)
		EXPECT_EQ(0, close(self->fd));
}

TEST_F(ioasid_ioas, ioas_destroy)
{
	/* Can allocate and manually free an IOAS table */
	test_ioctl_destroy(self->ioas_id);
}

TEST_F(ioasid_ioas, ioas_area_destroy)
{
	/* Adding an area does not change the ability to destroy */
	test_ioctl_ioas_map_fixed(buffer, PAGE_SIZE, self->base_iova);
	test_ioctl_destroy(self->ioas_id);
}

TEST_F(ioasid_ioas, ioas_area_auto_destroy)
{
	int i;

	/* Can allocate and automatically free an IOAS table with many areas */
	for (i = 0; i != 10; i++)
		test_ioctl_ioas_map_fixed(buffer, PAGE_SIZE,
					  self->base_iova + i * PAGE_SIZE);
}

TEST_F(ioasid_ioas, area)
{
	int i;

	/* Unmap fails if nothing is mapped */
	for (i = 0; i != 10; i++)
		test_err_ioctl_ioas_unmap(ENOENT, i * PAGE_SIZE, PAGE_SIZE);

	/* Unmap works */
	for (i = 0; i != 10; i++)
		test_ioctl_ioas_map_fixed(buffer, PAGE_SIZE,
					  self->base_iova + i * PAGE_SIZE);
	for (i = 0; i != 10; i++)
		test_ioctl_ioas_unmap(self->base_iova + i * PAGE_SIZE,
				      PAGE_SIZE);

	/* Split fails */
	test_ioctl_ioas_map_fixed(buffer, PAGE_SIZE * 2,
				  self->base_iova + 16 * PAGE_SIZE);
	test_err_ioctl_ioas_unmap(ENOENT, self->base_iova + 16 * PAGE_SIZE,
				  PAGE_SIZE);
	test_err_ioctl_ioas_unmap(ENOENT, self->base_iova + 17 * PAGE_SIZE,
				  PAGE_SIZE);

	/* Over map fails */
	test_err_ioctl_ioas_map_fixed(EEXIST, buffer, PAGE_SIZE * 2,
				      self->base_iova + 16 * PAGE_SIZE);
	test_err_ioctl_ioas_map_fixed(EEXIST, buffer, PAGE_SIZE,
				      self->base_iova + 16 * PAGE_SIZE);
	test_err_ioctl_ioas_map_fixed(EEXIST, buffer, PAGE_SIZE,
				      self->base_iova + 17 * PAGE_SIZE);
	test_err_ioctl_ioas_map_fixed(EEXIST, buffer, PAGE_SIZE * 2,
				      self->base_iova + 15 * PAGE_SIZE);
	test_err_ioctl_ioas_map_fixed(EEXIST, buffer, PAGE_SIZE * 3,
				      self->base_iova + 15 * PAGE_SIZE);

	/* unmap all works */
	test_ioctl_ioas_unmap(0, UINT64_MAX);

	/* Unmap all succeeds on an empty IOAS */
	test_ioctl_ioas_unmap(0, UINT64_MAX);
}

TEST_F(ioasid_ioas, unmap_fully_contained_areas)
{
	uint64_t unmap_len;
	int i;

	/* Give some space to rewind base_iova */
	self->base_iova += 4 * PAGE_SIZE;

	for (i = 0; i != 4; i++)
		test_ioctl_ioas_map_fixed(buffer, 8 * PAGE_SIZE,
					  self->base_iova + i * 16 * PAGE_SIZE);

	/* Unmap not fully contained area doesn't work */
	test_err_ioctl_ioas_unmap(ENOENT, self->base_iova - 4 * PAGE_SIZE,
				  8 * PAGE_SIZE);
	test_err_ioctl_ioas_unmap(ENOENT,
				  self->base_iova + 3 * 16 * PAGE_SIZE +
					  8 * PAGE_SIZE - 4 * PAGE_SIZE,
				  8 * PAGE_SIZE);

	/* Unmap fully contained areas works */
	ASSERT_EQ(0, _test_ioctl_ioas_unmap(self->fd, self->ioas_id,
					    self->base_iova - 4 * PAGE_SIZE,
					    3 * 16 * PAGE_SIZE + 8 * PAGE_SIZE +
						    4 * PAGE_SIZE,
					    &unmap_len));
	ASSERT_EQ(32 * PAGE_SIZE, unmap_len);
}

TEST_F(ioasid_ioas, unmap_all_returns_length)
{
	uint64_t unmap_len = 1;

	test_ioctl_ioas_map_fixed(buffer, 2 * PAGE_SIZE, self->base_iova);
	test_ioctl_ioas_map_fixed(buffer, 3 * PAGE_SIZE,
				  self->base_iova + 8 * PAGE_SIZE);
	ASSERT_EQ(0, _test_ioctl_ioas_unmap(self->fd, self->ioas_id, 0,
					    UINT64_MAX, &unmap_len));
	EXPECT_EQ(5 * PAGE_SIZE, unmap_len);
	ASSERT_EQ(0, _test_ioctl_ioas_unmap(self->fd, self->ioas_id, 0,
					    UINT64_MAX, &unmap_len));
	EXPECT_EQ(0, unmap_len);
}

TEST_F(ioasid_ioas, map_bad_input)
{
	struct iommu_ioas_map cmd = {
		.size = sizeof(cmd),
		.flags = MAP_FIXED_RW,
		.ioas_id = self->ioas_id,
		.user_va = (uintptr_t)buffer,
		.length = PAGE_SIZE,
		.iova = self->base_iova,
	};

	/* Unknown flags */
	cmd.flags = MAP_FIXED_RW | (1 << 3);
	EXPECT_ERRNO(EOPNOTSUPP, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.flags = MAP_FIXED_RW;
	/* Reserved must be zero */
	cmd.__reserved = 1;
	EXPECT_ERRNO(EOPNOTSUPP, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.__reserved = 0;
	/* Neither readable nor writeable */
	cmd.flags = IOMMU_IOAS_MAP_FIXED_IOVA;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.flags = MAP_FIXED_RW;
	/* iova or length that do not fit an unsigned long */
	cmd.iova = UINT64_MAX;
	EXPECT_ERRNO(EOVERFLOW, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.iova = self->base_iova;
	cmd.length = UINT64_MAX;
	EXPECT_ERRNO(EOVERFLOW, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	/* iova + length overflows */
	cmd.iova = UINT64_MAX - PAGE_SIZE + 1;
	cmd.length = 2 * PAGE_SIZE;
	EXPECT_ERRNO(EOVERFLOW, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.iova = self->base_iova;
	/* user_va + length overflows */
	cmd.user_va = UINT64_MAX - PAGE_SIZE + 1;
	EXPECT_ERRNO(EOVERFLOW, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.user_va = (uintptr_t)buffer;
	/* Zero length */
	cmd.length = 0;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.length = PAGE_SIZE;
	/* IOAS that does not exist */
	cmd.ioas_id = self->ioas_id + 100;
	EXPECT_ERRNO(ENOENT, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.ioas_id = 0;
	EXPECT_ERRNO(ENOENT, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	cmd.ioas_id = self->ioas_id;
	/* The good command works and maps where asked */
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_MAP, &cmd));
	EXPECT_EQ(self->base_iova, cmd.iova);
	test_ioctl_ioas_unmap(self->base_iova, PAGE_SIZE);
}

/*
 * Where pages are pinned. iommufd pins an IOAS's pages only once a domain
 * is attached, so without one it accepts IOMMU_IOAS_WRITEABLE over
 * read-only memory, and its IOVA alignment is 1. /dev/ioasid pins when it
 * maps and behaves like an IOAS with a domain of PAGE_SIZE pages attached:
 * the same map fails with EFAULT at once, and IOVAs, lengths and user
 * addresses must be whole pages.
 */
static bool pins_at_map(void)
{
	return strcmp(dev_path(), "/dev/iommu") != 0;
}

static unsigned long iova_alignment(void)
{
	return pins_at_map() ? PAGE_SIZE : 1;
}

TEST_F(ioasid_ioas, map_read_only_writeable)
{
	void *ro = mmap(NULL, 4 * PAGE_SIZE, PROT_READ,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned int length;
	__u64 iova;

	ASSERT_NE(MAP_FAILED, ro);
	if (pins_at_map()) {
		test_err_ioctl_ioas_map_fixed(EFAULT, ro, 4 * PAGE_SIZE,
					      self->base_iova);
	} else {
		test_ioctl_ioas_map_fixed(ro, 4 * PAGE_SIZE, self->base_iova);
		test_ioctl_ioas_unmap(self->base_iova, 4 * PAGE_SIZE);
	}
	EXPECT_EQ(0, munmap(ro, 4 * PAGE_SIZE));

	/* Lengths that are not whole pages, as iommufd.c's ioas_iova_alloc */
	for (length = 1; length < PAGE_SIZE * 2; length += 511) {
		if (length % iova_alignment()) {
			EXPECT_ERRNO(EINVAL,
				     _test_ioctl_ioas_map(self->fd,
							  self->ioas_id, buffer,
							  length, &iova,
							  MAP_RW));
			continue;
		}
		test_ioctl_ioas_map(buffer, length, &iova);
		test_ioctl_ioas_unmap(iova, length);
	}
}

TEST_F(ioasid_ioas, map_unaligned)
{
	struct {
		size_t offset;
		size_t length;
		__u64 iova;
	} cases[] = {
		/* An IOVA, a length, a user address within a page */
		{ 0, PAGE_SIZE, self->base_iova + PAGE_SIZE / 2 },
		{ 0, PAGE_SIZE / 2, self->base_iova },
		{ PAGE_SIZE / 2, PAGE_SIZE, self->base_iova },
		/* A kernel-chosen IOVA (0) for a user address within a page */
		{ PAGE_SIZE / 2, PAGE_SIZE, 0 },
	};
	struct iommu_ioas_copy copy_cmd = {
		.size = sizeof(copy_cmd),
		.flags = MAP_FIXED_RW,
		.dst_ioas_id = self->ioas_id,
		.src_ioas_id = self->ioas_id,
		.length = PAGE_SIZE,
		.src_iova = self->base_iova,
		.dst_iova = self->base_iova + 16 * PAGE_SIZE + PAGE_SIZE / 2,
	};
	bool page_aligned = iova_alignment() > 1;
	unsigned int i;

	for (i = 0; i != ARRAY_SIZE(cases); i++) {
		unsigned int flags = MAP_RW;
		__u64 iova = cases[i].iova;
		int rc;

		if (iova)
			flags |= IOMMU_IOAS_MAP_FIXED_IOVA;
		rc = _test_ioctl_ioas_map(self->fd, self->ioas_id,
					  buffer + cases[i].offset,
					  cases[i].length, &iova, flags);
		if (page_aligned) {
			EXPECT_ERRNO(EINVAL, rc);
		} else {
			ASSERT_EQ(0, rc);
			test_ioctl_ioas_unmap(iova, cases[i].length);
		}
	}

	/* A copy to an IOVA within a page */
	REQUIRE_IOCTL(IOMMU_IOAS_COPY, iommu_ioas_copy);
	test_ioctl_ioas_map_fixed(buffer, PAGE_SIZE, self->base_iova);
	if (page_aligned) {
		EXPECT_ERRNO(EINVAL,
			     ioctl(self->fd, IOMMU_IOAS_COPY, &copy_cmd));
	} else {
		ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_COPY, &copy_cmd));
		test_ioctl_ioas_unmap(copy_cmd.dst_iova, PAGE_SIZE);
	}
	test_ioctl_ioas_unmap(self->base_iova, PAGE_SIZE);
}

TEST_F(ioasid_ioas, area_auto_iova)
{
	__u64 iovas[10];
	int i;

	/* Simple 4k pages */
	for (i = 0; i != 10; i++)
		test_ioctl_ioas_map(buffer, PAGE_SIZE, &iovas[i]);
	for (i = 0; i != 10; i++)
		test_ioctl_ioas_unmap(iovas[i], PAGE_SIZE);

	/* Kernel automatically aligns IOVAs properly */
	for (i = 0; i != 10; i++) {
		size_t length = PAGE_SIZE * (i + 1);

		/* buffer is 2 MiB aligned: alignment comes from the length */
		test_ioctl_ioas_map(buffer, length, &iovas[i]);
		EXPECT_EQ(0, iovas[i] % (1UL << (ffs(length) - 1)));
	}
	for (i = 0; i != 10; i++)
		test_ioctl_ioas_unmap(iovas[i], PAGE_SIZE * (i + 1));
}

TEST_F(ioasid_ioas, area_allowed_auto_iova)
{
	struct iommu_iova_range ranges[1] = {};
	struct iommu_ioas_allow_iovas allow_cmd = {
		.size = sizeof(allow_cmd),
		.ioas_id = self->ioas_id,
		.num_iovas = 1,
		.allowed_iovas = (uintptr_t)ranges,
	};
	__u64 iovas[10];
	int i;

	REQUIRE_IOCTL(IOMMU_IOAS_ALLOW_IOVAS, iommu_ioas_allow_iovas);

	/* Invalid ranges */
	ranges[0].start = PAGE_SIZE * 200;
	ranges[0].last = PAGE_SIZE * 200;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_IOAS_ALLOW_IOVAS, &allow_cmd));
	allow_cmd.__reserved = 1;
	EXPECT_ERRNO(EOPNOTSUPP,
		     ioctl(self->fd, IOMMU_IOAS_ALLOW_IOVAS, &allow_cmd));
	allow_cmd.__reserved = 0;

	/* Allocate from an allowed region */
	ranges[0].start = PAGE_SIZE * 200;
	ranges[0].last = PAGE_SIZE * 600 - 1;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_ALLOW_IOVAS, &allow_cmd));
	for (i = 0; i != 10; i++) {
		size_t length = PAGE_SIZE * (i + 1);

		test_ioctl_ioas_map(buffer, length, &iovas[i]);
		EXPECT_EQ(0, iovas[i] % (1UL << (ffs(length) - 1)));
		EXPECT_EQ(true, iovas[i] >= ranges[0].start);
		EXPECT_EQ(true, iovas[i] <= ranges[0].last);
		EXPECT_EQ(true, iovas[i] + length > ranges[0].start);
		EXPECT_EQ(true, iovas[i] + length <= ranges[0].last + 1);
	}
	for (i = 0; i != 10; i++)
		test_ioctl_ioas_unmap(iovas[i], PAGE_SIZE * (i + 1));

	/* Clearing the list works */
	allow_cmd.num_iovas = 0;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_ALLOW_IOVAS, &allow_cmd));
}

TEST_F(ioasid_ioas, iova_ranges)
{
	struct iommu_iova_range *ranges = buffer;
	struct iommu_ioas_iova_ranges ranges_cmd = {
		.size = sizeof(ranges_cmd),
		.ioas_id = self->ioas_id,
		.num_iovas = BUFFER_SIZE / sizeof(*ranges),
		.allowed_iovas = (uintptr_t)ranges,
	};

	REQUIRE_IOCTL(IOMMU_IOAS_IOVA_RANGES, iommu_ioas_iova_ranges);

	/* Range can be read */
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_IOVA_RANGES, &ranges_cmd));
	EXPECT_EQ(1, ranges_cmd.num_iovas);
	EXPECT_EQ(0, ranges[0].start);
	EXPECT_EQ(SIZE_MAX, ranges[0].last);
	EXPECT_EQ(iova_alignment(), ranges_cmd.out_iova_alignment);

	/* Buffer too small */
	memset(ranges, 0, BUFFER_SIZE);
	ranges_cmd.num_iovas = 0;
	EXPECT_ERRNO(EMSGSIZE,
		     ioctl(self->fd, IOMMU_IOAS_IOVA_RANGES, &ranges_cmd));
	EXPECT_EQ(1, ranges_cmd.num_iovas);
	EXPECT_EQ(0, ranges[0].start);
	EXPECT_EQ(0, ranges[0].last);

	/* Reserved must be zero */
	ranges_cmd.__reserved = 1;
	EXPECT_ERRNO(EOPNOTSUPP,
		     ioctl(self->fd, IOMMU_IOAS_IOVA_RANGES, &ranges_cmd));
	ranges_cmd.__reserved = 0;

	/* Bad pointer */
	ranges_cmd.num_iovas = 1;
	ranges_cmd.allowed_iovas = 0;
	EXPECT_ERRNO(EFAULT,
		     ioctl(self->fd, IOMMU_IOAS_IOVA_RANGES, &ranges_cmd));
}

TEST_F(ioasid_ioas, copy_area)
{
	struct iommu_ioas_copy copy_cmd = {
		.size = sizeof(copy_cmd),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
		.dst_ioas_id = self->ioas_id,
		.src_ioas_id = self->ioas_id,
		.length = PAGE_SIZE,
	};

	REQUIRE_IOCTL(IOMMU_IOAS_COPY, iommu_ioas_copy);

	test_ioctl_ioas_map_fixed(buffer, PAGE_SIZE, self->base_iova);

	/* Copy inside a single IOAS */
	copy_cmd.src_iova = self->base_iova;
	copy_cmd.dst_iova = self->base_iova + PAGE_SIZE;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_COPY, &copy_cmd));

	/* Copying over it again fails */
	EXPECT_ERRNO(EEXIST, ioctl(self->fd, IOMMU_IOAS_COPY, &copy_cmd));

	/* Copy from nothing fails */
	copy_cmd.src_iova = self->base_iova + 64 * PAGE_SIZE;
	copy_cmd.dst_iova = self->base_iova + 128 * PAGE_SIZE;
	EXPECT_ERRNO(ENOENT, ioctl(self->fd, IOMMU_IOAS_COPY, &copy_cmd));

	/* Copy between IOAS's */
	copy_cmd.src_iova = self->base_iova;
	copy_cmd.dst_iova = 0;
	test_ioctl_ioas_alloc(&copy_cmd.dst_ioas_id);
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_COPY, &copy_cmd));

	/* Into an IOAS that does not exist */
	copy_cmd.dst_ioas_id = copy_cmd.dst_ioas_id + 100;
	EXPECT_ERRNO(ENOENT, ioctl(self->fd, IOMMU_IOAS_COPY, &copy_cmd));
}

TEST_F(ioasid_ioas, map_file)
{
	struct iommu_ioas_map_file cmd = {
		.size = sizeof(cmd),
		.flags = MAP_FIXED_RW,
		.ioas_id = self->ioas_id,
		.length = 4 * PAGE_SIZE,
		.iova = self->base_iova,
	};
	int mfd;

	REQUIRE_IOCTL(IOMMU_IOAS_MAP_FILE, iommu_ioas_map_file);

	mfd = syscall(__NR_memfd_create, "ioasid", 0);
	ASSERT_NE(-1, mfd);
	ASSERT_EQ(0, ftruncate(mfd, BUFFER_SIZE));

	cmd.fd = mfd;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
	EXPECT_EQ(self->base_iova, cmd.iova);
	EXPECT_ERRNO(EEXIST, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));

	/* Bad fd */
	cmd.iova = self->base_iova + 16 * PAGE_SIZE;
	cmd.fd = -1;
	EXPECT_ERRNO(EBADF, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
	cmd.fd = mfd;
	/* Zero length */
	cmd.length = 0;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
	/* start + length overflows */
	cmd.start = UINT64_MAX - PAGE_SIZE + 1;
	cmd.length = 2 * PAGE_SIZE;
	EXPECT_ERRNO(EOVERFLOW, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
	cmd.length = PAGE_SIZE;

	/*
	 * Where the pages are pinned at map time, the range must be whole
	 * pages of a memfd within its size; iommufd without a domain only
	 * finds out at attach.
	 */
	if (pins_at_map()) {
		int null_fd = open("/dev/null", O_RDWR);

		ASSERT_NE(-1, null_fd);
		cmd.start = PAGE_SIZE / 2;
		EXPECT_ERRNO(EINVAL,
			     ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
		cmd.start = BUFFER_SIZE;
		EXPECT_ERRNO(EINVAL,
			     ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
		cmd.start = 0;
		cmd.fd = null_fd;
		EXPECT_ERRNO(EINVAL,
			     ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
		cmd.fd = mfd;
		EXPECT_EQ(0, close(null_fd));
	}

	/* A kernel-chosen IOVA keeps the alignment of the file offset */
	cmd.flags = MAP_RW;
	cmd.start = 2 * PAGE_SIZE;
	cmd.length = 2 * PAGE_SIZE;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
	EXPECT_EQ(0, cmd.iova % (2 * PAGE_SIZE));
	test_ioctl_ioas_unmap(cmd.iova, 2 * PAGE_SIZE);

	test_ioctl_ioas_unmap(self->base_iova, 4 * PAGE_SIZE);
	EXPECT_EQ(0, close(mfd));
}

TEST_F(ioasid_ioas, ioas_option_huge_pages)
{
	struct iommu_option cmd = {
		.size = sizeof(cmd),
		.option_id = IOMMU_OPTION_HUGE_PAGES,
		.op = IOMMU_OPTION_OP_GET,
		.val64 = 3,
		.object_id = self->ioas_id,
	};

	REQUIRE_IOCTL(IOMMU_OPTION, iommu_option);

	ASSERT_EQ(0, ioctl(self->fd, IOMMU_OPTION, &cmd));
	ASSERT_EQ(1, cmd.val64);

	cmd.op = IOMMU_OPTION_OP_SET;
	cmd.val64 = 0;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_OPTION, &cmd));

	cmd.op = IOMMU_OPTION_OP_GET;
	cmd.val64 = 3;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_OPTION, &cmd));
	ASSERT_EQ(0, cmd.val64);

	cmd.op = IOMMU_OPTION_OP_SET;
	cmd.val64 = 2;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_OPTION, &cmd));

	cmd.op = IOMMU_OPTION_OP_SET;
	cmd.val64 = 1;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_OPTION, &cmd));

	/* Unknown op and option */
	cmd.op = 2;
	EXPECT_ERRNO(EOPNOTSUPP, ioctl(self->fd, IOMMU_OPTION, &cmd));
	cmd.op = IOMMU_OPTION_OP_GET;
	cmd.option_id = 7;
	EXPECT_ERRNO(EOPNOTSUPP, ioctl(self->fd, IOMMU_OPTION, &cmd));
}

TEST_F(ioasid, global_options)
{
	struct iommu_option cmd = {
		.size = sizeof(cmd),
		.option_id = IOMMU_OPTION_RLIMIT_MODE,
		.op = IOMMU_OPTION_OP_GET,
		.val64 = 1,
	};

	REQUIRE_IOCTL(IOMMU_OPTION, iommu_option);

	ASSERT_EQ(0, ioctl(self->fd, IOMMU_OPTION, &cmd));
	ASSERT_EQ(0, cmd.val64);

	/* This requires root */
	cmd.op = IOMMU_OPTION_OP_SET;
	cmd.val64 = 1;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_OPTION, &cmd));
	cmd.val64 = 2;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_OPTION, &cmd));

	cmd.op = IOMMU_OPTION_OP_GET;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_OPTION, &cmd));
	ASSERT_EQ(1, cmd.val64);

	cmd.op = IOMMU_OPTION_OP_SET;
	cmd.val64 = 0;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_OPTION, &cmd));

	cmd.op = IOMMU_OPTION_OP_GET;
	cmd.option_id = IOMMU_OPTION_HUGE_PAGES;
	EXPECT_ERRNO(ENOENT, ioctl(self->fd, IOMMU_OPTION, &cmd));
	cmd.op = IOMMU_OPTION_OP_SET;
	EXPECT_ERRNO(ENOENT, ioctl(self->fd, IOMMU_OPTION, &cmd));
}

TEST_HARNESS_MAIN
