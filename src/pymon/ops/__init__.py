"""What operators and their tools see and say: the control API and its client, metrics,
persisted operator state, systemd notification, the VRRP role and the status page."""
