"""Network discovery: which devices are on a school subnet, by ARP, DHCP and a few ports.

scapy is an optional extra (``campuswatch[scanner]``): only the scanner role imports it, and
only inside the functions that send or capture packets.
"""
