"""Raw frames for the tenant isolation tests (zone/tests/isolation.rs), with scapy.

  frames.py send IFACE JSON   send the frames JSON describes, each tagged with a marker
  frames.py bytes JSON        print those frames in hex, one a line (for a tap)
  frames.py sniff IFACE SECS WORDS  print "ready", then every marker (of the
                              comma-separated WORDS) seen within SECS seconds
  frames.py serve SECS PORT... TCP listeners that answer "hi" for SECS; print "ready"
  frames.py connect ADDR PORT print "open" or "closed"

A marker is an ASCII word in the payload (or, for ARP, the claimed sender address),
so the receiving side can say which of the attacker's frames arrived.
"""
import json
import socket
import sys
import threading
import time

from scapy.all import (ARP, BOOTP, DHCP, ICMP, ICMPv6ND_RA, IP, IPv6, TCP, UDP,
                       AsyncSniffer, Dot1Q, Ether, Raw, conf, sendp)

conf.verb = 0


def frame(spec):
    eth = Ether(src=spec["mac"], dst=spec.get("dst_mac", "ff:ff:ff:ff:ff:ff"))
    kind, marker = spec["kind"], spec["marker"].encode()
    if kind == "udp":
        ports = dict(sport=spec.get("sport", 4000), dport=spec.get("dport", 9999))
        return eth / IP(src=spec["src"], dst=spec["dst"]) / UDP(**ports) / Raw(marker)
    if kind == "udp6":
        return eth / IPv6(src=spec["src"], dst=spec["dst"]) / UDP(sport=4000, dport=9999) / Raw(marker)
    # All but UDP (and ICMPv6) take the antispoof rules' fast path
    # (host/src/isolation/rules.rs): TCP, ICMP, and any other protocol number.
    if kind == "tcp":
        return eth / IP(src=spec["src"], dst=spec["dst"]) / TCP(sport=4000, dport=9999) / Raw(marker)
    if kind == "tcp6":
        return eth / IPv6(src=spec["src"], dst=spec["dst"]) / TCP(sport=4000, dport=9999) / Raw(marker)
    if kind == "icmp":
        return eth / IP(src=spec["src"], dst=spec["dst"]) / ICMP() / Raw(marker)
    if kind == "proto":
        return eth / IP(src=spec["src"], dst=spec["dst"], proto=spec["proto"]) / Raw(marker)
    if kind == "proto6":
        return eth / IPv6(src=spec["src"], dst=spec["dst"], nh=spec["proto"]) / Raw(marker)
    if kind == "vlan":
        return eth / Dot1Q(vlan=spec["vlan"]) / IP(src=spec["src"], dst=spec["dst"]) / UDP(
            sport=4000, dport=9999) / Raw(marker)
    if kind == "arp":
        # Gratuitous ARP: "psrc is at hwsrc", to everyone.
        return eth / ARP(op=2, hwsrc=spec["mac"], psrc=spec["src"], pdst=spec["src"],
                         hwdst="ff:ff:ff:ff:ff:ff")
    if kind == "dhcp-offer":
        return (eth / IP(src=spec["src"], dst="255.255.255.255") / UDP(sport=67, dport=68)
                / BOOTP(op=2, yiaddr="10.0.0.77", chaddr=b"\x02" * 6)
                / DHCP(options=[("message-type", "offer"), "end"]) / Raw(marker))
    if kind == "dhcp-discover":
        # A DHCP client before it has an address: from 0.0.0.0 to the broadcast address.
        return (eth / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
                / BOOTP(op=1, chaddr=bytes.fromhex(spec["mac"].replace(":", "")))
                / DHCP(options=[("message-type", "discover"), "end"]) / Raw(marker))
    if kind == "ra":
        return (Ether(src=spec["mac"], dst="33:33:00:00:00:01")
                / IPv6(src=spec["src"], dst="ff02::1") / ICMPv6ND_RA() / Raw(marker))
    raise SystemExit(f"unknown frame kind {kind}")


def markers(pkt):
    raw = bytes(pkt)
    found = [w for w in WORDS if w.encode() in raw]
    if Dot1Q in pkt:
        found += [f"vlan{pkt[Dot1Q].vlan}:{w}" for w in found]
    if ARP in pkt and pkt[ARP].op == 2:
        found.append(f"arp:{pkt[ARP].psrc}:{pkt[ARP].hwsrc}")
    return found


WORDS = []


def main():
    cmd = sys.argv[1]
    if cmd == "send":
        for spec in json.loads(sys.argv[3]):
            sendp(frame(spec), iface=sys.argv[2])
            time.sleep(0.05)
    elif cmd == "bytes":
        for spec in json.loads(sys.argv[2]):
            print(bytes(frame(spec)).hex())
    elif cmd == "sniff":
        WORDS.extend(sys.argv[4].split(","))
        seen = set()
        sniffer = AsyncSniffer(iface=sys.argv[2], store=False,
                               prn=lambda p: seen.update(markers(p)))
        sniffer.start()
        time.sleep(0.5)
        print("ready", flush=True)
        time.sleep(float(sys.argv[3]))
        sniffer.stop()
        for m in sorted(seen):
            print(m, flush=True)
    elif cmd == "serve":
        def serve(port):
            s = socket.socket(socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", port))
            s.listen()
            while True:
                c, _ = s.accept()
                c.sendall(b"hi")
                c.close()
        for port in sys.argv[3:]:
            threading.Thread(target=serve, args=(int(port),), daemon=True).start()
        time.sleep(0.3)
        print("ready", flush=True)
        time.sleep(float(sys.argv[2]))
    elif cmd == "connect":
        try:
            s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=2)
            print("open" if s.recv(2) == b"hi" else "closed")
        except OSError:
            print("closed")
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
