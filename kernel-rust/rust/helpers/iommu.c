// SPDX-License-Identifier: GPL-2.0

#include <linux/iommu.h>

/**
 * rust_helper_iommu_domain_enforce_cache_coherency() - make a domain block
 *	no-snoop DMA.
 * @domain: a paging domain that maps nothing yet.
 *
 * The IOMMU core has no wrapper for the enforce_cache_coherency operation of a
 * domain; iommufd and VFIO type1 call the operation directly, as this does.
 *
 * Return: true if the domain now enforces cache coherency, false if its IOMMU
 * driver cannot.
 */
__rust_helper bool
rust_helper_iommu_domain_enforce_cache_coherency(struct iommu_domain *domain)
{
	if (!domain->ops->enforce_cache_coherency)
		return false;
	return domain->ops->enforce_cache_coherency(domain);
}
