// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>

__rust_helper unsigned long rust_helper_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}
