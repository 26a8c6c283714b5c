// SPDX-License-Identifier: GPL-2.0
/*
 * iommu_misuse - call the IOMMU API on a real domain the way a buggy kernel user would
 *
 * ioasid-top's audit has rules for IOMMU API calls that no correct in-tree caller makes: an
 * iommu_unmap() that unmaps less than it asked, and memory mapped without IOMMU_CACHE into a
 * domain that enforces coherency or holds coherent maps. To show those rules firing on real
 * calls, seen by the real probes, this module makes the calls, as lib/test_kasan.c makes bad
 * accesses for KASAN. It is test-only: `cargo xtask test` builds it against the test kernel and
 * ci/vm/audit-misuse.sh loads it in the VM; it is not part of the patch series.
 *
 * Loading it allocates a paging domain for the PCI device @bdf, attaches it to the device's
 * IOMMU group (iommu_attach_group(), which ioasid-top traces, so the domain is tied to the
 * device), and does @misuse. The domain stays attached, with what is still mapped, until the
 * module is removed, like a driver holding its domain. The load fails, with the reason in the
 * kernel log, when a call does not behave as the misuse needs.
 *
 *  short-unmap      map one page at MISUSE_IOVA, unmap two pages there: iommu_unmap() stops at
 *                   the hole and returns one page
 *  noncoherent-map  map one page of memory without IOMMU_CACHE
 *  mixed-map        map one page with IOMMU_CACHE and the next one without
 *  coherent-map     map one page with IOMMU_CACHE, as VFIO and iommufd do: no misuse by
 *                   itself, but left mapped and attached on a device bound to vfio-pci that
 *                   nobody opened, the domain is what a VFIO backend that leaked its domain at
 *                   release would leave
 *
 * The module claims the group's DMA ownership first, as VFIO and iommufd do, so the load
 * fails with -EBUSY rather than take the DMA of a device whose driver uses the DMA API.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/gfp.h>
#include <linux/iommu.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/string.h>

static char *bdf;
module_param(bdf, charp, 0444);
MODULE_PARM_DESC(bdf, "PCI device whose IOMMU group gets the domain, e.g. 0000:00:0a.0");

static char *misuse;
module_param(misuse, charp, 0444);
MODULE_PARM_DESC(misuse, "short-unmap, noncoherent-map, mixed-map or coherent-map");

/* The domain is the module's own: any IOVA in its aperture is free. */
#define MISUSE_IOVA 0x100000UL
#define MISUSE_PAGES 2

static const char *const misuses[] = {
	"short-unmap", "noncoherent-map", "mixed-map", "coherent-map",
};

static struct device *misuse_dev;
static struct iommu_group *misuse_group;
static bool misuse_owner;
static bool misuse_attached;
static struct iommu_domain *misuse_domain;
static struct page *misuse_pages;

static int misuse_map(unsigned int index, int prot)
{
	unsigned long iova = MISUSE_IOVA + index * PAGE_SIZE;
	int ret;

	ret = iommu_map(misuse_domain, iova, page_to_phys(misuse_pages + index),
			PAGE_SIZE, prot, GFP_KERNEL);
	if (ret)
		pr_err("iommu_map of IOVA %#lx with prot %#x failed: %d\n",
		       iova, prot, ret);
	return ret;
}

static int misuse_do(void)
{
	const int rw = IOMMU_READ | IOMMU_WRITE;
	size_t unmapped;
	int ret;

	if (!strcmp(misuse, "short-unmap")) {
		ret = misuse_map(0, rw | IOMMU_CACHE);
		if (ret)
			return ret;
		unmapped = iommu_unmap(misuse_domain, MISUSE_IOVA,
				       MISUSE_PAGES * PAGE_SIZE);
		pr_info("iommu_unmap of %lu bytes at IOVA %#lx unmapped %zu\n",
			MISUSE_PAGES * PAGE_SIZE, MISUSE_IOVA, unmapped);
		if (unmapped != PAGE_SIZE) {
			pr_err("expected iommu_unmap to stop at the unmapped page\n");
			return -EIO;
		}
		return 0;
	}
	if (!strcmp(misuse, "noncoherent-map"))
		return misuse_map(0, rw);
	if (!strcmp(misuse, "coherent-map"))
		return misuse_map(0, rw | IOMMU_CACHE);
	if (!strcmp(misuse, "mixed-map")) {
		ret = misuse_map(0, rw | IOMMU_CACHE);
		if (ret)
			return ret;
		return misuse_map(1, rw);
	}
	return -EINVAL;
}

/* Unmaps what is still mapped, page by page, then detaches and frees everything. */
static void misuse_teardown(void)
{
	unsigned int i;

	if (misuse_domain) {
		for (i = 0; i < MISUSE_PAGES; i++) {
			unsigned long iova = MISUSE_IOVA + i * PAGE_SIZE;

			if (iommu_iova_to_phys(misuse_domain, iova))
				iommu_unmap(misuse_domain, iova, PAGE_SIZE);
		}
		if (misuse_attached)
			iommu_detach_group(misuse_domain, misuse_group);
		misuse_attached = false;
		iommu_domain_free(misuse_domain);
		misuse_domain = NULL;
	}
	if (misuse_owner) {
		iommu_group_release_dma_owner(misuse_group);
		misuse_owner = false;
	}
	if (misuse_group) {
		iommu_group_put(misuse_group);
		misuse_group = NULL;
	}
	if (misuse_pages) {
		__free_pages(misuse_pages, get_order(MISUSE_PAGES * PAGE_SIZE));
		misuse_pages = NULL;
	}
	put_device(misuse_dev);
	misuse_dev = NULL;
}

static int __init iommu_misuse_init(void)
{
	struct iommu_domain *domain;
	int ret;

	if (!bdf || !misuse) {
		pr_err("give bdf= and misuse=\n");
		return -EINVAL;
	}
	if (match_string(misuses, ARRAY_SIZE(misuses), misuse) < 0) {
		pr_err("unknown misuse '%s': short-unmap, noncoherent-map, mixed-map or coherent-map\n",
		       misuse);
		return -EINVAL;
	}
	misuse_dev = bus_find_device_by_name(&pci_bus_type, NULL, bdf);
	if (!misuse_dev) {
		pr_err("no PCI device %s\n", bdf);
		return -ENODEV;
	}
	misuse_group = iommu_group_get(misuse_dev);
	if (!misuse_group) {
		pr_err("%s is not behind an IOMMU\n", bdf);
		ret = -ENODEV;
		goto out;
	}
	ret = iommu_group_claim_dma_owner(misuse_group, &misuse_owner);
	if (ret) {
		pr_err("cannot claim the DMA of %s's group (a driver uses it?): %d\n",
		       bdf, ret);
		goto out;
	}
	misuse_owner = true;
	misuse_pages = alloc_pages(GFP_KERNEL | __GFP_ZERO,
				   get_order(MISUSE_PAGES * PAGE_SIZE));
	if (!misuse_pages) {
		ret = -ENOMEM;
		goto out;
	}
	domain = iommu_paging_domain_alloc(misuse_dev);
	if (IS_ERR(domain)) {
		ret = PTR_ERR(domain);
		pr_err("no paging domain for %s: %d\n", bdf, ret);
		goto out;
	}
	misuse_domain = domain;
	ret = iommu_attach_group(misuse_domain, misuse_group);
	if (ret) {
		pr_err("cannot attach the domain to %s's group: %d\n", bdf, ret);
		goto out;
	}
	misuse_attached = true;
	ret = misuse_do();
	if (ret)
		goto out;
	pr_info("%s done on %s, domain %px stays attached until removal\n",
		misuse, bdf, misuse_domain);
	return 0;
out:
	misuse_teardown();
	return ret;
}

static void __exit iommu_misuse_exit(void)
{
	misuse_teardown();
}

module_init(iommu_misuse_init);
module_exit(iommu_misuse_exit);
MODULE_DESCRIPTION("Calls the IOMMU API the way a buggy user would, for ioasid-top's audit tests");
MODULE_LICENSE("GPL");
