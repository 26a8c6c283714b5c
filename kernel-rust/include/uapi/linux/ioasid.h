/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * /dev/ioasid user API
 *
 * /dev/ioasid is a Rust implementation of the IOMMU user API.  It speaks the
 * iommufd ABI: its ioctls use the ioctl type, ioctl numbers, structure
 * layouts and error codes that <linux/iommufd.h> defines for /dev/iommu, so
 * a program written against iommufd works unchanged on a file descriptor
 * obtained by opening /dev/ioasid instead of /dev/iommu.
 *
 * The ABI is defined by <linux/iommufd.h> alone; this header exists so that
 * users can name the device they program against, and to hold definitions
 * that are specific to /dev/ioasid should it ever need any.
 */
#ifndef _UAPI_LINUX_IOASID_H
#define _UAPI_LINUX_IOASID_H

#include <linux/iommufd.h>

#endif /* _UAPI_LINUX_IOASID_H */
