"""Compliance reports: the plan KPIs per period and site, rendered and archived.

``periods`` (which dates), ``kpis`` (the figures), ``render`` (HTML / PDF / XLSX),
``schedule`` (due dates and the archive), ``cli`` (``campuswatch report``).
See docs/reports.md.
"""
