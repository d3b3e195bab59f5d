"""Real Redis Cluster and Redis Sentinel topologies for tests, built on ``RedisServer``.

Every process is a real ``redis-server`` bound to 127.0.0.1 on a free port, with
its own temporary directory and nothing on disk beyond it. Failover is a real
failure: the primary is killed with SIGKILL, and the helpers wait (polling, with
generous time limits for a loaded machine) until the topology has healed.
Whatever was started is torn down again if start-up fails halfway.

    with RedisClusterSet(primaries=3, replicas_per_primary=1) as cluster:
        client = redis.cluster.RedisCluster.from_url(cluster.url)
        ...
        cluster.failover(cluster.primaries()[0])

    with SentinelSet() as sentinels:
        client = redis.sentinel.Sentinel(sentinels.sentinel_addresses).master_for("mymaster")
        ...
        sentinels.failover()
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.redis_server import RedisServer, RedisServerMissing, find_binary

ServerT = TypeVar("ServerT", bound=RedisServer)

HOST = "127.0.0.1"
SLOTS = 16384
# How long a node may take to be declared failing: small so that failover takes
# seconds, not the default 15 s.
NODE_TIMEOUT_MS = 1000
SENTINEL_DOWN_AFTER_MS = 1000
# Also how long sentinels wait before retrying a failover that did not complete
# (twice this), e.g. after a split vote: keep it short.
SENTINEL_FAILOVER_TIMEOUT_MS = 3000
START_ATTEMPTS = 3
# A SIGTERM shutdown must not wait (up to shutdown-timeout, 10 s) for replicas
# to catch up: tear-down is about speed, and nothing is kept anyway.
FAST_SHUTDOWN = ("--shutdown-on-sigterm", "now")
# A replica's initial sync must not wait the default 5 s for more replicas to
# share one diskless transfer.
NO_SYNC_DELAY = ("--repl-diskless-sync-delay", "0")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while picked)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def command(port: int, *args: str | int, timeout: float = 5.0) -> Any:
    """One command to one node over a fresh connection: the raw decoded reply.

    A bare connection, not a client: no retries, no response callbacks, so the
    reply's shape does not depend on the redis-py version.
    """
    conn = redis.Connection(  # type: ignore[no-untyped-call]
        host=HOST,
        port=port,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
    )
    try:
        conn.send_command(*args)  # type: ignore[no-untyped-call]
        return conn.read_response()
    finally:
        conn.disconnect()  # type: ignore[no-untyped-call]


def is_running(server: RedisServer) -> bool:
    return server.process is not None and server.process.poll() is None


def logs(servers: Iterable[RedisServer], tail: int = 40) -> str:
    """The last lines of each server's log files, for error messages."""
    parts = []
    for server in servers:
        for name in ("stderr.log", "redis.log", "sentinel.log"):
            path = server.dir / name
            if not path.exists():
                continue
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            if lines:
                parts.append(f"--- {HOST}:{server.port} {name} ---\n" + "\n".join(lines))
    return "\n".join(parts)


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    servers: Callable[[], Iterable[RedisServer]],
    interval: float = 0.1,
) -> None:
    """Poll ``condition`` until true; else RuntimeError with the last error and the logs.

    Exceptions from ``condition`` (a node not answering yet, a reply in flux) count as
    "not yet".
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if condition():
                return
            last_error = None
        except (redis.RedisError, OSError, ValueError, KeyError, IndexError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise RuntimeError(f"{what} did not happen within {timeout}s{detail}\n{logs(servers())}")


def kill(server: RedisServer) -> None:
    """A real failure: SIGKILL, no chance to hand anything over. The temp dir stays."""
    if server.process is not None and server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def stop_all(servers: Iterable[RedisServer]) -> None:
    """Stop servers in parallel (SIGTERM all, then wait), kill stragglers, remove dirs."""
    servers = list(servers)
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            with contextlib.suppress(OSError):
                server.process.terminate()
    for server in servers:
        if server.process is not None:
            try:
                server.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
        server.stop()


def start_server(make: Callable[[], ServerT], timeout: float) -> ServerT:
    """Start a server, retrying on fresh ports if one was taken in the meantime."""
    for attempt in range(1, START_ATTEMPTS + 1):
        server = make()
        try:
            return server.start(timeout=timeout)
        except RedisServerMissing:
            server.stop()
            raise
        except RuntimeError:
            server.stop()
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _key_values(text: Any, what: str) -> dict[str, str]:
    """``key:value`` lines (INFO, CLUSTER INFO) as a dict; ``# Section`` lines skipped."""
    if not isinstance(text, str):
        raise ValueError(f"{what}: {text!r}")
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value for key, value in pairs if not key.startswith("#")}


def info(port: int, section: str) -> dict[str, str]:
    return _key_values(command(port, "INFO", section), f"INFO {section} on {port}")


def role(port: int) -> str:
    """``master``, ``slave`` (a replica) or ``sentinel``."""
    reply = command(port, "ROLE", timeout=2.0)
    return str(reply[0])


def replica_in_sync(port: int, master_port: int) -> bool:
    """The replica follows ``master_port``, its link is up and its initial sync is done."""
    replication = info(port, "replication")
    return (
        replication.get("role") == "slave"
        and int(replication.get("master_port", -1)) == master_port
        and replication.get("master_link_status") == "up"
        and int(replication.get("master_sync_in_progress", 1)) == 0
    )


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    link_connected: bool
    slot_count: int

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def healthy(self) -> bool:
        return self.link_connected and not self.flags & {"fail", "fail?", "handshake", "noaddr"}


def cluster_nodes(port: int) -> dict[str, ClusterNodeView]:
    """The node's view of the cluster, by node id."""
    text = command(port, "CLUSTER", "NODES")
    if not isinstance(text, str):
        raise ValueError(f"CLUSTER NODES on {port}: {text!r}")
    views = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags, master, _, _, _, link, *slots = fields
        slot_count = 0
        for spec in slots:
            if spec.startswith("["):  # a slot being migrated / imported
                continue
            first, _, last = spec.partition("-")
            slot_count += int(last or first) - int(first) + 1
        views[node_id] = ClusterNodeView(
            node_id=node_id,
            # ip:port@cport[,hostname]
            port=int(address.split("@")[0].rsplit(":", 1)[1]),
            flags=frozenset(flags.split(",")),
            master_id=None if master == "-" else master,
            link_connected=link == "connected",
            slot_count=slot_count,
        )
    return views


def cluster_info(port: int) -> dict[str, str]:
    return _key_values(command(port, "CLUSTER", "INFO"), f"CLUSTER INFO on {port}")


class _ProcessSet:
    """What a set of processes shares: a start that stops whatever it started
    if it fails halfway, and use as a context manager."""

    def _start(self, timeout: float) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> Self:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisClusterSet(_ProcessSet):
    """A Redis Cluster of ``primaries`` masters with ``replicas_per_primary`` replicas each.

    Slots are split evenly between the primaries in order. Roles change after
    ``failover()``; ``primaries()`` and ``replicas()`` always ask the live nodes.
    """

    def __init__(self, primaries: int = 3, replicas_per_primary: int = 0) -> None:
        if primaries < 1 or replicas_per_primary < 0:
            raise ValueError("need at least one primary and a non-negative replica count")
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.nodes: list[RedisServer] = []  # every node ever started, dead or alive
        self.node_ids: dict[int, str] = {}  # port -> cluster node id

    # ---- start-up

    def _make_node(self) -> RedisServer:
        port, bus_port = free_ports(2)
        server = RedisServer(port=port)
        server.extra_args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(server.dir / "nodes.conf"),
            # The bus port is port + 10000 by default, which may be taken or past 65535.
            "--cluster-port", str(bus_port),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # Without this a single failed primary makes every node refuse every
            # command (CLUSTERDOWN) until its replica has taken over; with it the
            # other primaries keep serving their slots during a failover.
            "--cluster-require-full-coverage", "no",
            # A replica may always take over, however long it was disconnected:
            # a loaded machine must not make a failover test hang.
            "--cluster-replica-validity-factor", "0",
            "--appendonly", "no",
            "--save", "",
            *FAST_SHUTDOWN,
            *NO_SYNC_DELAY,
        )  # fmt: skip
        return server

    def _start(self, timeout: float) -> None:
        total = self.primary_count * (1 + self.replicas_per_primary)
        for _ in range(total):
            self.nodes.append(start_server(self._make_node, timeout=min(timeout, 15)))
        for node in self.nodes:
            self.node_ids[node.port] = str(command(node.port, "CLUSTER", "MYID"))
        primaries = self.nodes[: self.primary_count]
        replicas = self.nodes[self.primary_count :]

        # Distinct config epochs up front (as redis-cli --cluster create does), so
        # nodes need not resolve epoch collisions before the cluster is stable.
        for epoch, node in enumerate(self.nodes, start=1):
            command(node.port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for index, node in enumerate(primaries):
            first = index * SLOTS // self.primary_count
            last = (index + 1) * SLOTS // self.primary_count - 1
            command(node.port, "CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.nodes[0]
        bus_ports = {node.port: self._bus_port(node) for node in self.nodes}
        for node in self.nodes[1:]:
            command(seed.port, "CLUSTER", "MEET", HOST, node.port, bus_ports[node.port])

        ids = set(self.node_ids.values())

        def everyone_knows_everyone() -> bool:
            for node in self.nodes:
                views = cluster_nodes(node.port)
                if set(views) != ids or not all(v.healthy for v in views.values()):
                    return False
            return True

        wait_until(everyone_knows_everyone, timeout, "cluster handshake", self._all)

        for index, replica in enumerate(replicas):
            primary = primaries[index % self.primary_count]
            command(replica.port, "CLUSTER", "REPLICATE", self.node_ids[primary.port])

        expected_masters = {self.node_ids[p.port] for p in primaries}

        def converged() -> bool:
            for node in self.nodes:
                state = cluster_info(node.port)
                if state.get("cluster_state") != "ok":
                    return False
                if int(state.get("cluster_slots_assigned", 0)) != SLOTS:
                    return False
                views = cluster_nodes(node.port)
                masters = {v.node_id for v in views.values() if v.is_master}
                if masters != expected_masters:
                    return False
                if not all(v.healthy for v in views.values()):
                    return False
            for index, replica in enumerate(replicas):
                primary = primaries[index % self.primary_count]
                if not replica_in_sync(replica.port, primary.port):
                    return False
            return True

        wait_until(
            converged, timeout, "cluster convergence (state ok, replicas in sync)", self._all
        )

    @staticmethod
    def _bus_port(node: RedisServer) -> int:
        args = list(node.extra_args)
        return int(args[args.index("--cluster-port") + 1])

    def _all(self) -> list[RedisServer]:
        return list(self.nodes)

    # ---- inspection

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if is_running(node)]

    def primaries(self) -> list[RedisServer]:
        """The live nodes that are masters now."""
        return [node for node in self.live_nodes() if role(node.port) == "master"]

    def replicas(self) -> list[RedisServer]:
        """The live nodes that are replicas now."""
        return [node for node in self.live_nodes() if role(node.port) == "slave"]

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        primary_id = self.node_ids[primary.port]
        views = cluster_nodes(primary.port)
        ports = {v.port for v in views.values() if v.master_id == primary_id}
        return [node for node in self.live_nodes() if node.port in ports]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, node.port) for node in self.live_nodes()]

    @property
    def url(self) -> str:
        primaries = self.primaries()
        if not primaries:
            raise RuntimeError("the cluster has no live primary")
        return primaries[0].url

    # ---- failure

    def failover(self, primary: RedisServer, timeout: float = 60) -> RedisServer:
        """Kill ``primary`` (SIGKILL) and wait until one of its replicas has taken over.

        Returns the promoted node, once every live node sees it as the master of
        the dead primary's slots and reports ``cluster_state:ok``.
        """
        if primary not in self.live_nodes() or role(primary.port) != "master":
            raise ValueError(f"{primary.url} is not a live primary")
        candidates = self.replicas_of(primary)
        if not candidates:
            raise ValueError(f"{primary.url} has no replica to fail over to")
        dead_id = self.node_ids[primary.port]
        slot_count = cluster_nodes(primary.port)[dead_id].slot_count
        candidate_ids = {self.node_ids[node.port] for node in candidates}
        promoted: list[RedisServer] = []

        kill(primary)

        def taken_over() -> bool:
            new = [node for node in candidates if role(node.port) == "master"]
            if len(new) != 1:
                return False
            new_id = self.node_ids[new[0].port]
            for node in self.live_nodes():
                if cluster_info(node.port).get("cluster_state") != "ok":
                    return False
                views = cluster_nodes(node.port)
                if "fail" not in views[dead_id].flags:
                    return False
                if views[dead_id].slot_count != 0:
                    return False
                view = views[new_id]
                if not view.is_master or view.slot_count != slot_count:
                    return False
                # Other replicas of the dead primary follow the new one.
                others = candidate_ids - {new_id}
                if any(views[other].master_id != new_id for other in others):
                    return False
            promoted[:] = new
            return True

        wait_until(taken_over, timeout, f"failover of {primary.url}", self._all, interval=0.2)
        return promoted[0]

    # ---- tear-down

    def stop(self) -> None:
        stop_all(self.nodes)
        self.nodes = []
        self.node_ids = {}


# --------------------------------------------------------------------------- sentinel


class SentinelServer(RedisServer):
    """``redis-server <conf> --sentinel``: Sentinel needs a config file it can rewrite."""

    def __init__(self, master_name: str, master_port: int, quorum: int) -> None:
        super().__init__()
        self.master_name = master_name
        self.master_port = master_port
        self.quorum = quorum

    @property
    def config(self) -> str:
        name = self.master_name
        return "\n".join(
            [
                f"port {self.port}",
                f"bind {HOST}",
                f"dir {self.dir}",
                f"logfile {self.dir / 'sentinel.log'}",
                "daemonize no",
                f"sentinel monitor {name} {HOST} {self.master_port} {self.quorum}",
                f"sentinel down-after-milliseconds {name} {SENTINEL_DOWN_AFTER_MS}",
                f"sentinel failover-timeout {name} {SENTINEL_FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {name} 1",
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> Self:
        conf = self.dir / "sentinel.conf"
        conf.write_text(self.config)
        args = [find_binary(), str(conf), "--sentinel"]
        with open(self.dir / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argument list
                args, stdout=subprocess.DEVNULL, stderr=stderr
            )
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"sentinel exited at start-up:\n{logs([self])}")
            return bool(command(self.port, "PING", timeout=0.5))

        try:
            wait_until(answers, timeout, f"sentinel on port {self.port} answering", lambda: [self])
        except RuntimeError:
            self.stop()
            raise
        return self


def _pairs(reply: Any) -> dict[str, str]:
    """A map reply (RESP3) or a flat [key, value, ...] list (RESP2) as a dict."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    if not isinstance(reply, list) or len(reply) % 2:
        raise ValueError(f"not a key/value reply: {reply!r}")
    return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}


class SentinelSet(_ProcessSet):
    """One primary, ``replicas`` replicas and ``sentinels`` sentinels monitoring them."""

    def __init__(
        self, replicas: int = 1, sentinels: int = 3, master_name: str = "mymaster"
    ) -> None:
        if replicas < 0 or sentinels < 1:
            raise ValueError("need a non-negative replica count and at least one sentinel")
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.master_name = master_name
        self.quorum = sentinels // 2 + 1
        self.servers: list[RedisServer] = []  # every data node ever started
        self.sentinels: list[SentinelServer] = []

    def _all(self) -> list[RedisServer]:
        return [*self.servers, *self.sentinels]

    def _start(self, timeout: float) -> None:
        per_process = min(timeout, 15)
        primary = start_server(lambda: RedisServer(*FAST_SHUTDOWN, *NO_SYNC_DELAY), per_process)
        self.servers.append(primary)
        for _ in range(self.replica_count):
            replica = start_server(
                lambda: RedisServer(
                    "--replicaof", HOST, str(primary.port), *FAST_SHUTDOWN, *NO_SYNC_DELAY
                ),
                per_process,
            )
            self.servers.append(replica)
        replicas = self.servers[1:]
        wait_until(
            lambda: all(replica_in_sync(r.port, primary.port) for r in replicas),
            timeout,
            "initial replication",
            self._all,
        )
        for _ in range(self.sentinel_count):
            self.sentinels.append(
                start_server(
                    lambda: SentinelServer(self.master_name, primary.port, self.quorum),
                    per_process,
                )
            )
        replica_ports = {r.port for r in replicas}

        def sentinels_agree() -> bool:
            for sentinel in self.sentinels:
                master = _pairs(command(sentinel.port, "SENTINEL", "MASTER", self.master_name))
                if master["flags"] != "master" or int(master["port"]) != primary.port:
                    return False
                if int(master["num-other-sentinels"]) != self.sentinel_count - 1:
                    return False
                known = command(sentinel.port, "SENTINEL", "REPLICAS", self.master_name)
                healthy = {
                    int(view["port"])
                    for view in map(_pairs, known)
                    if view["flags"] == "slave" and view["master-link-status"] == "ok"
                }
                if healthy != replica_ports:
                    return False
            return True

        wait_until(sentinels_agree, timeout, "sentinels discovering the topology", self._all)

    # ---- inspection

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(HOST, s.port) for s in self.sentinels if is_running(s)]

    def _master_port(self) -> int:
        """The master's port according to the first sentinel that answers."""
        errors = []
        for sentinel in self.sentinels:
            try:
                reply = command(
                    sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                return int(reply[1])
            except (redis.RedisError, OSError, TypeError, IndexError) as exc:
                errors.append(exc)
        raise RuntimeError(f"no sentinel names a master for {self.master_name}: {errors!r}")

    def _server(self, port: int) -> RedisServer:
        for server in self.servers:
            if server.port == port:
                return server
        raise RuntimeError(f"sentinels name {HOST}:{port}, which is not one of ours")

    def primary(self) -> RedisServer:
        """The current master, as a sentinel reports it."""
        return self._server(self._master_port())

    def replicas(self) -> list[RedisServer]:
        """The live data nodes that are replicas now."""
        return [s for s in self.servers if is_running(s) and role(s.port) == "slave"]

    # ---- failure

    def failover(self, timeout: float = 60) -> RedisServer:
        """Kill the master (SIGKILL); wait until every sentinel names a replica that is master.

        Also waits for any remaining replicas to be in sync with the new master.
        """
        old = self.primary()
        if not any(is_running(s) for s in self.servers if s is not old):
            raise ValueError("no replica to fail over to")
        kill(old)
        new_port: list[int] = []

        def promoted() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                reply = command(
                    sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                ports.add(int(reply[1]))
            if len(ports) != 1 or old.port in ports:
                return False
            (port,) = ports
            if role(port) != "master":
                return False
            others = [s for s in self.servers if is_running(s) and s.port != port]
            if not all(replica_in_sync(s.port, port) for s in others):
                return False
            new_port[:] = [port]
            return True

        wait_until(promoted, timeout, f"sentinel failover from {old.url}", self._all, interval=0.2)
        return self._server(new_port[0])

    # ---- tear-down

    def stop(self) -> None:
        stop_all([*self.sentinels, *self.servers])
        self.sentinels = []
        self.servers = []
