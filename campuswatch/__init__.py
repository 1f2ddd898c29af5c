"""CampusWatch: monitoring of school PCs, links and smart-classroom devices."""

__version__ = "0.1.0"
