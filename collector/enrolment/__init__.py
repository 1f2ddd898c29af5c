"""Enrolment of agents and devices: tokens per school, per-device broker logins."""
