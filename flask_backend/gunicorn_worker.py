"""gunicorn's gthread worker, each with a listening socket of its own (``reuse_port``).

Why its own socket: with one socket shared by every worker, whichever worker wakes first
accepts, and gthread hands an accepted connection to its thread pool's queue without bound.
A burst of keep-alive clients (a proxy's connection pool, a load test, an app opening its
connections at once) can therefore all land on one worker while the other idles for as long
as those connections live: in ``scripts/bench_load.py`` one worker ran at 100% and the other at
0% for whole scenarios (the match route at 0.22x ``/health`` instead of 0.59x). With
``reuse_port`` every worker listens on a SO_REUSEPORT socket of its own and the kernel spreads
new connections over them by a hash of the address pair.

What this class adds to gunicorn's own ``reuse_port``: a stopping worker (SIGTERM, a HUP
reload, the master going away) accepts every connection already queued on its socket and
closes the socket at once, so the kernel sends the next connections to the other workers.
Stock gthread keeps the socket open, unaccepted, through its drain (up to its keep-alive
linger, 2 s) and closes it afterwards, resetting whatever queued there meanwhile. A connection
that completes its handshake in the instant between the last accept and the close is still
reset unless ``net.ipv4.tcp_migrate_req=1`` (Linux >= 5.14; README "Deployment").

A booting worker's socket already listens (gunicorn binds it at fork), so a connection the
kernel gives it waits for the worker's warm-up rather than being refused; with recycling off
(``FACEMATCH_WEB_MAX_REQUESTS=0``) that happens at start and after a crash only.
"""

from __future__ import annotations

import select

from gunicorn.workers.gthread import ThreadWorker


class ReusePortThreadWorker(ThreadWorker):
    """``worker_class`` of gunicorn.conf.py (plain gthread when reuse_port is off)."""

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        # not alive: the run loop has ended and the drain begins (accepting is also turned
        # off, alive, at worker_connections; that must keep the socket)
        if not enabled and not self.alive and self.cfg.reuse_port:
            self.hand_over()

    def hand_over(self) -> None:
        """Serve what is queued on this worker's sockets, then close them."""
        for listener in self.sockets:
            # gunicorn's accept() takes one connection and swallows EAGAIN: ask the socket
            # (poll, not select: no FD_SETSIZE limit under LimitNOFILE=65536)
            ready = select.poll()
            ready.register(listener, select.POLLIN)
            while ready.poll(0):
                before = self.nr_conns
                self.accept(listener)
                if self.nr_conns == before:  # readable but nothing to take (aborted): done
                    break
            listener.close()
        self.sockets = []
