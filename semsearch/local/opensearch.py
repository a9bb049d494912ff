"""A real single-node OpenSearch with ml-commons, k-NN and neural search, on 127.0.0.1.

Fetch: Maven resolves the artifacts pinned in ``pom.xml`` beside this file (the core's
integ-test zip, the plugin zips, the jars lang-painless is assembled from) through its own
cache, ~/.m2. Install: unpacked once per pom into ``<home>/opensearch-<version>-<stamp>``
and never written to again; a lock makes concurrent first runs safe. Run: every node gets
its own ``<home>/nodes/<name>/{config,data,logs}`` (OPENSEARCH_PATH_CONF points there), so a
test session and ``semsearch local up`` can run side by side on different ports.

``<home>`` is $SEMSEARCH_LOCAL_HOME, else /var/tmp/semsearch-local as root (OpenSearch will
not run as root: the node runs as nobody, 65534, and must be able to traverse its folders,
which a checkout under a mode-700 temporary folder would not allow), else
~/.cache/semsearch.

Security is on by default: the security plugin's demo TLS certificates, HTTPS, basic auth
as ``admin`` with a random password written beside the install. The k-NN zip on Maven
Central carries no native libraries, so only the ``lucene`` engine works on this node
(faiss and nmslib crash the JVM).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from semsearch.errors import UsageError
from semsearch.local.client import Connection

log = logging.getLogger(__name__)

POM = Path(__file__).with_name("pom.xml")
# Bump when the install recipe below changes, so a cached install is rebuilt.
_RECIPE = "5"
# Plugins in install order: each may extend the ones before it.
PLUGINS = ("opensearch-job-scheduler", "opensearch-ml-plugin", "opensearch-knn", "neural-search", "opensearch-security")
# lang-painless's jars, which become modules/lang-painless/ (k-NN extends it).
PAINLESS_JARS = ("lang-painless", "opensearch-scripting-painless-spi", "antlr4-runtime",
                 "asm", "asm-util", "asm-tree", "asm-commons", "asm-analysis")
# The reindex module's jars (the rest client is for reindex from a remote cluster), which
# become modules/reindex/: the glue re-embeds a model change with _reindex.
REINDEX_JARS = ("reindex-client", "opensearch-rest-client", "opensearch-ssl-config", "httpclient", "httpcore",
                "httpasyncclient", "httpcore-nio", "commons-codec", "commons-logging")
NOBODY = 65534
ADMIN_USER = "admin"


class LocalNodeError(UsageError):
    """The node could not be installed or started; the message says what to do."""


def pinned_versions() -> dict[str, str]:
    """The <properties> of pom.xml: the one place the versions are written."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(POM).getroot().find("m:properties", ns)  # noqa: S314 - our own file
    assert props is not None
    return {el.tag.split("}", 1)[1]: (el.text or "").strip() for el in props}


def local_home() -> Path:
    if os.environ.get("SEMSEARCH_LOCAL_HOME"):
        return Path(os.environ["SEMSEARCH_LOCAL_HOME"])
    if os.geteuid() == 0:
        return Path("/var/tmp/semsearch-local")
    return Path.home() / ".cache" / "semsearch"


def java_home() -> Path:
    """JAVA_HOME, or the JDK behind `java` on PATH; 17 or newer (what OpenSearch 2.19 tests on)."""
    if os.environ.get("JAVA_HOME"):
        java = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
    else:
        found = shutil.which("java")
        java = Path(os.path.realpath(found)) if found else Path()
    if not found_executable(java):
        raise LocalNodeError("Java 17 is needed to run OpenSearch and was not found: install a JDK "
                             "(Debian/Ubuntu: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME")
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    if not match or int(match.group(1)) < 17:
        raise LocalNodeError(f"OpenSearch needs Java 17 or newer; {java} says: {out.strip().splitlines()[0]}")
    return java.parent.parent


def found_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _maven() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalNodeError("Maven is needed to fetch OpenSearch from Maven Central and was not found: "
                             "install it (Debian/Ubuntu: apt-get install maven)")
    return mvn


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unzip(archive: Path, dest: Path) -> None:
    """Unpack keeping the execute bits (zipfile alone drops them)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = Path(zf.extract(info, dest))
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                target.chmod(stat.S_IMODE(mode) | 0o644)


def _fetch(dest: Path) -> dict[str, Path]:
    """Every artifact of pom.xml copied into ``dest``, keyed by artifact id."""
    cmd = [_maven(), "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={dest}", "-DexcludeTransitive=true", "-Dmdep.stripVersion=false"]
    log.info("fetching OpenSearch artifacts with Maven (cached in ~/.m2 after the first run)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LocalNodeError(f"Maven could not fetch the OpenSearch artifacts ({' '.join(cmd)}):\n"
                             f"{(proc.stdout + proc.stderr)[-3000:]}")
    versions = pinned_versions()
    found: dict[str, Path] = {}
    for path in dest.iterdir():
        for version in versions.values():  # every property of the pom is a version
            suffix = f"-{version}{path.suffix}"
            if path.name.endswith(suffix):
                found.setdefault(path.name[: -len(suffix)], path)
    return found


def _painless_module(dest: Path, jars: dict[str, Path], version: str) -> None:
    """modules/lang-painless from Maven jars: flat (one class loader) plus a descriptor."""
    dest.mkdir(parents=True)
    for name in PAINLESS_JARS:
        shutil.copy2(jars[name], dest / jars[name].name)
    (dest / "plugin-descriptor.properties").write_text(
        "description=Painless scripting language (assembled from Maven Central jars)\n"
        f"version={version}\nname=lang-painless\nclassname=org.opensearch.painless.PainlessPlugin\n"
        f"java.version=11\nopensearch.version={version}\nextended.plugins=\nhas.native.controller=false\n")
    (dest / "plugin-security.policy").write_text(
        'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n'
        '  permission java.lang.RuntimePermission "getClassLoader";\n};\n')


def _reindex_module(dest: Path, jars: dict[str, Path], version: str) -> None:
    """modules/reindex from Maven jars, as the full distribution ships it (_reindex,
    _update_by_query, _delete_by_query)."""
    dest.mkdir(parents=True)
    for name in REINDEX_JARS:
        shutil.copy2(jars[name], dest / jars[name].name)
    (dest / "plugin-descriptor.properties").write_text(
        "description=The Reindex module adds APIs to reindex from one index to another or update documents in "
        f"place (assembled from Maven Central jars)\nversion={version}\nname=reindex\n"
        "classname=org.opensearch.index.reindex.ReindexPlugin\n"
        f"java.version=11\nopensearch.version={version}\nextended.plugins=\nhas.native.controller=false\n")
    (dest / "plugin-security.policy").write_text(
        'grant {\n  permission java.net.SocketPermission "*", "connect";\n};\n'
        'grant codeBase "${codebase.opensearch-rest-client}" {\n'
        '  permission java.net.NetPermission "getProxySelector";\n};\n'
        'grant codeBase "${codebase.httpasyncclient}" {\n'
        '  permission java.net.NetPermission "getProxySelector";\n};\n')


def install() -> Path:
    """The installed OpenSearch directory for the pinned versions, building it if needed."""
    home = local_home()
    versions = pinned_versions()
    stamp = hashlib.sha256(POM.read_bytes() + _RECIPE.encode()).hexdigest()[:10]
    target = home / f"opensearch-{versions['opensearch.version']}-{stamp}"
    if (target / ".installed").is_file():
        return target
    jhome = java_home()
    with _locked(home / ".install.lock"):
        if (target / ".installed").is_file():  # another process finished it while we waited
            return target
        started = time.monotonic()
        home.chmod(0o755)
        with tempfile.TemporaryDirectory(dir=home, prefix=".build-") as tmp:
            work = Path(tmp)
            Path(tmp).chmod(0o755)
            artifacts = _fetch(work / "artifacts")
            _unzip(artifacts["opensearch"], work / "unpacked")
            (root,) = (work / "unpacked").iterdir()
            _painless_module(root / "modules" / "lang-painless", artifacts, versions["opensearch.version"])
            _reindex_module(root / "modules" / "reindex", artifacts, versions["opensearch.version"])
            env = {**os.environ, "OPENSEARCH_JAVA_HOME": str(jhome)}
            for plugin in PLUGINS:
                proc = subprocess.run([str(root / "bin" / "opensearch-plugin"), "install", "--batch",
                                       artifacts[plugin].as_uri()], env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise LocalNodeError(f"installing {plugin} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
            _demo_security(root, env)
            (root / ".installed").write_text(f"{versions}\n")
            if target.exists():  # a half-built leftover from an interrupted run
                shutil.rmtree(target)
            root.rename(target)
        log.info("installed OpenSearch into %s in %.0f s", target, time.monotonic() - started)
    return target


def _demo_security(root: Path, env: dict[str, str]) -> None:
    """The security plugin's demo TLS certificates and users, with a random admin password."""
    # The demo tool rejects weak passwords; this one always passes its checks.
    password = "Ss1-" + secrets.token_urlsafe(18)
    tool = root / "plugins" / "opensearch-security" / "tools" / "install_demo_configuration.sh"
    tool.chmod(0o755)
    proc = subprocess.run(["bash", str(tool), "-y", "-i", "-s"],
                          env={**env, "OPENSEARCH_HOME": str(root), "OPENSEARCH_INITIAL_ADMIN_PASSWORD": password},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise LocalNodeError(f"the security demo configuration failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    (root / "config" / "admin-password").write_text(password)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it; released on return)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NodeSettings:
    """Per-node choices; the defaults suit a 2-core machine shared with other work."""

    security: bool = True
    heap: str = "1g"
    http_port: int = 0  # 0: a free port
    #: Connector URLs ml-commons accepts. Locally: the endpoint on 127.0.0.1, any port.
    trusted_endpoints: str = r"^http://127\.0\.0\.1:[0-9]+/.*$"


class OpenSearchNode:
    """One node: ``start()`` waits until it is green and ml-commons answers; ``stop()``.

    ``name`` picks the node folder under ``<home>/nodes``; its data survives a restart
    unless ``fresh=True``.
    """

    def __init__(self, name: str, settings: NodeSettings | None = None, *, fresh: bool = False):
        self.name = name
        self.settings = settings or NodeSettings()
        self.fresh = fresh
        self.dir = local_home() / "nodes" / name
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.connection: Connection | None = None

    @property
    def log_file(self) -> Path:
        return self.dir / "logs" / "stdout.log"

    def _prepare(self, install_dir: Path) -> None:
        if self.fresh and self.dir.exists():
            shutil.rmtree(self.dir)
        config = self.dir / "config"
        if not config.exists():
            shutil.copytree(install_dir / "config", config)
        for sub in ("data", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.http_port = self.settings.http_port or free_port()
        lines = [
            f"cluster.name: semsearch-{self.name}",
            "node.name: node-0",
            "network.host: 127.0.0.1",
            f"http.port: {self.http_port}",
            f"transport.port: {free_port()}",
            "discovery.type: single-node",
            f"path.data: {self.dir / 'data'}",
            f"path.logs: {self.dir / 'logs'}",
            # A shared build machine's disk may be fuller than OpenSearch's default watermarks.
            "cluster.routing.allocation.disk.threshold_enabled: false",
            # One node is both data and ml node; remote models need no local resources, so the
            # memory breakers (percent of the whole machine, shared with other jobs) stay out.
            "plugins.ml_commons.only_run_on_ml_node: false",
            "plugins.ml_commons.native_memory_threshold: 100",
            "plugins.ml_commons.jvm_heap_memory_threshold: 100",
            # Locally only: the connector targets the endpoint on 127.0.0.1.
            f"plugins.ml_commons.trusted_connector_endpoints_regex: ['{self.settings.trusted_endpoints}']",
            "plugins.ml_commons.connector.private_ip_enabled: true",
        ]
        if self.settings.security:
            lines.append("plugins.security.audit.type: noop")  # no audit index to feed
        else:
            lines.append("plugins.security.disabled: true")
        # The install's file (the security demo configuration) first, then ours, rewritten on
        # every start (ports change). OpenSearch rejects a key given twice, so ours win by
        # removing the install's line for the same key.
        ours = {line.split(":", 1)[0] for line in lines}
        base = [line for line in (install_dir / "config" / "opensearch.yml").read_text().splitlines()
                if line.split(":", 1)[0] not in ours]
        (config / "opensearch.yml").write_text("\n".join([*base, "# semsearch node settings", *lines]) + "\n")
        jvm = (install_dir / "config" / "jvm.options").read_text()
        jvm = re.sub(r"(?m)^-Xm([sx])\S+$", lambda m: f"-Xm{m.group(1)}{self.settings.heap}", jvm)
        # The launcher runs from the install folder, which the node may not write to.
        jvm = jvm.replace("file=logs/", f"file={self.dir}/logs/").replace("=logs/", f"={self.dir}/logs/")
        jvm = jvm.replace("HeapDumpPath=data", f"HeapDumpPath={self.dir}/data")
        (config / "jvm.options").write_text(jvm)
        if os.geteuid() == 0:
            self._chown_tree(self.dir)

    @staticmethod
    def _chown_tree(path: Path) -> None:
        for parent in (path.parent, path.parent.parent):
            parent.chmod(0o755)
        for dirpath, dirnames, filenames in os.walk(path):
            os.chown(dirpath, NOBODY, NOBODY)
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), NOBODY, NOBODY, follow_symlinks=False)

    def start(self, timeout_s: float = 300) -> Connection:
        install_dir = install()
        jhome = java_home()
        self._prepare(install_dir)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir), "LANG": "C.UTF-8",
               "OPENSEARCH_JAVA_HOME": str(jhome), "OPENSEARCH_PATH_CONF": str(self.dir / "config")}
        as_nobody = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
        out = self.log_file.open("ab")
        started = time.monotonic()
        # Own session: `local down` (another process) stops the whole group; Ctrl-C here doesn't.
        self.proc = subprocess.Popen([str(install_dir / "bin" / "opensearch")], cwd=self.dir, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, **as_nobody)  # type: ignore[call-overload]
        out.close()
        (self.dir / "node.pid").write_text(str(self.proc.pid))
        scheme = "https" if self.settings.security else "http"
        if self.settings.security:
            self.connection = Connection(f"{scheme}://127.0.0.1:{self.http_port}", ADMIN_USER,
                                         (install_dir / "config" / "admin-password").read_text().strip(),
                                         ca_file=str(self.dir / "config" / "root-ca.pem"))
        else:
            self.connection = Connection(f"{scheme}://127.0.0.1:{self.http_port}")
        try:
            wait_ready(self.connection, deadline=started + timeout_s, alive=lambda: self.proc.poll() is None,
                       log_file=self.log_file)
        except BaseException:
            self.stop()
            raise
        log.info("OpenSearch %s up on %s in %.0f s", self.name, self.connection.url, time.monotonic() - started)
        return self.connection

    def stop(self, timeout_s: float = 60) -> None:
        if self.proc is not None:
            stop_process_group(self.proc.pid, timeout_s)
            self.proc.wait()
            self.proc = None


def reap_stale_nodes(prefix: str) -> list[str]:
    """Stop and remove nodes ``<prefix><pid>`` whose owning process (a test session) is gone.

    A killed test run cannot stop its node; the next run does, so a shared machine does not
    collect orphaned JVMs. Only a process whose command line names that node's own config
    folder is stopped.
    """
    reaped = []
    for node_dir in sorted((local_home() / "nodes").glob(f"{prefix}*")):
        owner = node_dir.name.removeprefix(prefix)
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        pid_file = node_dir / "node.pid"
        if pid_file.is_file():
            pid = int(pid_file.read_text())
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                if f"-Dopensearch.path.conf={node_dir / 'config'}" in cmdline:
                    stop_process_group(pid)
        shutil.rmtree(node_dir, ignore_errors=True)
        reaped.append(node_dir.name)
    return reaped


def stop_process_group(pid: int, timeout_s: float = 60) -> None:
    """SIGTERM the group a node (or server) leads, then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def wait_ready(conn: Connection, *, deadline: float, alive=lambda: True, log_file: Path | None = None) -> None:
    """Block until the node answers, the cluster is green and ml-commons serves its API."""
    last = "no answer yet"
    stage = "HTTP"
    while time.monotonic() < deadline:
        if not alive():
            tail = log_file.read_text(errors="replace")[-4000:] if log_file and log_file.exists() else ""
            raise LocalNodeError(f"OpenSearch exited during start-up; log {log_file}:\n{tail}")
        try:
            stage = "green"
            conn.request("GET", "/_cluster/health?wait_for_status=green&timeout=5s")
            stage = "ml-commons"
            # Answers only once ml-commons has loaded; an empty search is the cheapest call.
            conn.request("POST", "/_plugins/_ml/models/_search", {"size": 0, "query": {"match_all": {}}})
            return
        except Exception as e:  # any failure means: not ready yet
            last = str(e)[:300]
        time.sleep(1)
    raise LocalNodeError(f"OpenSearch not ready at {conn.url} ({stage}): {last}; log: {log_file}")
