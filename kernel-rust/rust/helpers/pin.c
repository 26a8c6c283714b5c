// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>

/**
 * rust_helper_page_to_pfn() - page_to_pfn() for Rust, which cannot call macros.
 * @page: a valid page.
 *
 * Return: the page frame number of @page.
 */
__rust_helper unsigned long rust_helper_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

/**
 * rust_helper_folio_nr_pages() - folio_nr_pages() for Rust, an inline function.
 * @folio: a valid folio.
 *
 * Return: the number of pages in @folio.
 */
__rust_helper unsigned long rust_helper_folio_nr_pages(const struct folio *folio)
{
	return folio_nr_pages(folio);
}

/**
 * rust_helper_folio_page() - folio_page() for Rust, which cannot call macros.
 * @folio: a valid folio.
 * @n: the index of a page of @folio, below folio_nr_pages().
 *
 * Return: the @n-th page of @folio.
 */
__rust_helper struct page *rust_helper_folio_page(struct folio *folio,
						  unsigned long n)
{
	return folio_page(folio, n);
}
