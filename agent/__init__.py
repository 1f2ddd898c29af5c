"""The CampusWatch agent: probes on a lab PC, a runner that queues and publishes over MQTT."""
