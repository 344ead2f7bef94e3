"""A sample deimos service: turns paid orders into invoices."""
