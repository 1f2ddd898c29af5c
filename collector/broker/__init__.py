"""Mosquitto for CampusWatch: TLS, per-device passwords and an ACL kept in step with enrolment.

``config`` writes the broker's files once; ``credentials.BrokerCredentials`` is what enrolment
and revocation call afterwards (it rewrites the password and ACL files and reloads Mosquitto).
"""
