"""The facilities asset register: identity resolution, manual edits, import/export, KPIs."""
