"""Reporting: the HTML study report and its figures."""
