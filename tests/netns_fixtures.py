"""Hosts for tests as Linux network namespaces (root only): one bridge, one veth pair per host.

    with Network(["a", "b"]) as net:      # net.ip("a") -> "10.x.y.2"; the test itself is net.gateway
        subprocess.Popen(net.wrap("a", [...]))

Each namespace has its loopback and one address on a private /24 behind a bridge that only
these namespaces (and the test process, on the bridge's address) are attached to: no route
anywhere else. Everything is removed on exit.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from typing import Self

import pytest


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def need_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add): CI runs as root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (the ip command) is not installed")


class Network:
    def __init__(self, hosts: list[str]) -> None:
        self.tag = f"fm{os.getpid() % 10000}{random.randrange(100)}"
        self.subnet = f"10.{random.randrange(100, 250)}.{random.randrange(1, 250)}"
        self.bridge = f"br{self.tag}"
        self.hosts = {h: i + 2 for i, h in enumerate(hosts)}
        self.gateway = f"{self.subnet}.1"

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def ip(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts[host]}"

    def wrap(self, host: str, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *cmd]

    def __enter__(self) -> Self:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host, n in self.hosts.items():
                ns, outer, inner = self.ns(host), f"v{self.tag}{n}", f"p{self.tag}{n}"
                _ip("netns", "add", ns)
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                _ip("link", "set", inner, "netns", ns)
                _ip("link", "set", outer, "master", self.bridge)
                _ip("link", "set", outer, "up")
                _ip("-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", inner)
                _ip("-n", ns, "link", "set", inner, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.__exit__()
            pytest.skip(f"cannot create network namespaces here: {exc.stderr.decode(errors='replace').strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", self.ns(host)], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
