"""A real Kubernetes control plane on loopback, for the GitOps tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as child processes
with their own certificates in a temporary folder. There is no kubelet: pods are created
and admitted (Pod Security, ServiceAccount, ValidatingAdmissionPolicy), never run, and
Deployments, ReplicaSets, Jobs, HPAs and the garbage collector are the real controllers.

The binaries come from the folder named by KUBEBUILDER_ASSETS (envtest's convention;
`scripts/kube-assets` fills it), etcd from there or from PATH; the CRDs of the operators
the tree pins from its `crds/` subfolder.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request

import yaml

from harness.ports import free_port

ASSETS_VARIABLE = "KUBEBUILDER_ASSETS"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


class Unavailable(RuntimeError):
    """The control plane cannot start here (assets or etcd missing)."""


def assets_dir() -> pathlib.Path:
    value = os.environ.get(ASSETS_VARIABLE)
    if not value:
        raise Unavailable(
            f"{ASSETS_VARIABLE} is not set: run `scripts/kube-assets` (make test does) and point "
            f"{ASSETS_VARIABLE} at the folder it prints"
        )
    path = pathlib.Path(value)
    missing = [name for name in BINARIES if not os.access(path / name, os.X_OK)]
    if missing or not (path / "crds").is_dir():
        raise Unavailable(f"{path} lacks {', '.join(missing) or 'crds/'}: run `scripts/kube-assets`")
    return path


def etcd_binary(assets: pathlib.Path) -> str:
    for candidate in (assets / "etcd", shutil.which("etcd")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise Unavailable("etcd is not installed (Debian: apt-get install etcd-server)")



def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(pki: pathlib.Path) -> None:
    """A CA, the API server's serving certificate, client certificates for the admin and
    the two controllers, and the service-account signing pair."""
    pki.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    (pki / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject, ext in (
        ("server", "/CN=kube-apiserver", "server.ext"),
        ("admin", "/O=system:masters/CN=admin", "client.ext"),
        ("controller-manager", "/CN=system:kube-controller-manager", "client.ext"),
        ("scheduler", "/CN=system:kube-scheduler", "client.ext"),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", f"{name}.crt", cwd=pki)


def _kubeconfig(path: pathlib.Path, server: str, pki: pathlib.Path, user: str) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(pki / f"{user}.crt"),
            "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }))


class ControlPlane:
    """Start with `ControlPlane.start()`; `stop()` ends every process and removes the folder."""

    def __init__(self, workdir: pathlib.Path):
        self.workdir = workdir
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.kubeconfig = workdir / "admin.kubeconfig"

    @classmethod
    def start(cls) -> "ControlPlane":
        assets = assets_dir()
        etcd = etcd_binary(assets)
        plane = cls(pathlib.Path(tempfile.mkdtemp(prefix="controlplane-")))
        try:
            plane._start(assets, etcd)
        except BaseException:
            plane.stop()
            raise
        return plane

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((name, process))

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def _start(self, assets: pathlib.Path, etcd: str) -> None:
        pki = self.workdir / "pki"
        _certificates(pki)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", [
            etcd, "--data-dir", str(self.workdir / "etcd"), "--name", "test",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn("kube-apiserver", [
            str(assets / "kube-apiserver"),
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(api_port),
            "--client-ca-file", str(pki / "ca.crt"),
            "--tls-cert-file", str(pki / "server.crt"), "--tls-private-key-file", str(pki / "server.key"),
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--authorization-mode", "Node,RBAC",
            "--endpoint-reconciler-type", "none",
            "--disable-admission-plugins", "DefaultStorageClass",
        ])
        _kubeconfig(self.kubeconfig, self.server, pki, "admin")
        self._wait_ready(pki)
        for name in ("controller-manager", "scheduler"):
            _kubeconfig(self.workdir / f"{name}.kubeconfig", self.server, pki, name)
        self._spawn("kube-controller-manager", [
            str(assets / "kube-controller-manager"),
            "--kubeconfig", str(self.workdir / "controller-manager.kubeconfig"),
            "--authentication-kubeconfig", str(self.workdir / "controller-manager.kubeconfig"),
            "--authorization-kubeconfig", str(self.workdir / "controller-manager.kubeconfig"),
            "--use-service-account-credentials",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--cluster-signing-cert-file", str(pki / "ca.crt"),
            "--cluster-signing-key-file", str(pki / "ca.key"),
            "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            # The HPA controller asks every 15 s by default; the tests wait for its verdict.
            "--horizontal-pod-autoscaler-sync-period", "2s",
        ])
        self._spawn("kube-scheduler", [
            str(assets / "kube-scheduler"),
            "--kubeconfig", str(self.workdir / "scheduler.kubeconfig"),
            "--authentication-kubeconfig", str(self.workdir / "scheduler.kubeconfig"),
            "--authorization-kubeconfig", str(self.workdir / "scheduler.kubeconfig"),
            "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
        ])
        # The controllers are up once the token controller has given `default` its
        # ServiceAccount in a namespace (it does so for every namespace).
        self.wait_for(lambda: self.get("serviceaccount", "default", namespace="default"),
                      "the controller-manager to create default/default", timeout=60)

    def _tls(self, pki: pathlib.Path) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def request(self, method: str, path: str, *, user: str, groups: tuple[str, ...] = ()) -> tuple[int, str]:
        """A raw API request as an impersonated user (the admin's certificate carries the
        impersonation), for calls kubectl only makes after checks of its own, such as the
        port-forward CONNECT on a pod that is not running."""
        # http.client, because each group is a header of its own (urllib keeps one per name).
        host, port = self.server.removeprefix("https://").split(":")
        connection = http.client.HTTPSConnection(host, int(port), context=self._tls(self.workdir / "pki"), timeout=10)
        try:
            connection.putrequest(method, path)
            connection.putheader("Impersonate-User", user)
            for group in groups:
                connection.putheader("Impersonate-Group", group)
            connection.endheaders()
            answer = connection.getresponse()
            return answer.status, answer.read().decode(errors="replace")
        finally:
            connection.close()

    def _wait_ready(self, pki: pathlib.Path, timeout: float = 60) -> None:
        context = self._tls(pki)
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=context, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("kube-apiserver not ready:\n" + self.log("kube-apiserver")[-3000:])
            time.sleep(0.3)

    def _check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n" + self.log(name)[-3000:])

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- kubectl, as the admin or as an impersonated identity ---------------------------------

    def kubectl(self, *args: str, identity: str | None = None, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
        argv = ["kubectl", "--kubeconfig", str(self.kubeconfig), *args]
        if identity:
            argv.append(f"--as={identity}")
        result = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} as {identity or 'admin'} failed:\n{result.stderr}")
        return result

    def get(self, kind: str, name: str | None = None, *, namespace: str | None = None,
            identity: str | None = None) -> dict | None:
        """The object (or list) as JSON, None if it does not exist."""
        args = ["get", kind] + ([name] if name else []) + ["-o", "json"]
        if namespace:
            args += ["-n", namespace]
        result = self.kubectl(*args, identity=identity, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(f"kubectl {' '.join(args)} as {identity or 'admin'}: {result.stderr}")
        return json.loads(result.stdout)

    def items(self, kind: str, namespace: str, *, selector: str | None = None,
              identity: str | None = None) -> list[dict]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.kubectl(*args, identity=identity).stdout)["items"]

    def apply(self, objects: list[dict], *, identity: str | None = None,
              field_manager: str = "kustomize-controller") -> None:
        """Server-side apply, forced, in the stages of Flux's kustomize-controller: the
        cluster definitions (CRDs, Namespaces), then the classes, then the rest, each
        stage a server dry run of the whole stage first and then the apply."""
        stages: list[list[dict]] = [[], [], []]
        for obj in objects:
            kind = obj["kind"]
            stage = 0 if kind in ("CustomResourceDefinition", "Namespace") else 1 if kind.endswith("Class") else 2
            stages[stage].append(obj)
        common = ["apply", "--server-side", "--force-conflicts", f"--field-manager={field_manager}", "-f", "-"]
        for stage in stages:
            if stage:
                text = yaml.safe_dump_all(stage)
                self.kubectl(*common, "--dry-run=server", identity=identity, input=text)
                self.kubectl(*common, identity=identity, input=text)

    def wait_for(self, predicate, what: str, timeout: float = 30, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(interval)

    def events(self, namespace: str) -> list[dict]:
        return self.items("events", namespace)
