"""Gate scenarios: YAML files in ``gates/`` (nodes, stages, expectations) and their runner.

A scenario file::

    description: ...
    site: site                      # site directory (relative to the repository)
    overlay: gates/overlays/x       # optional: files copied over the site (extra documents)
    nodes: {n0: 192.168.77.10, ...}
    etcdctl: {endpoint: ..., cacert: ..., cert: ..., key: ...}   # paths on the nodes
    files: {genesis: [{path: ..., mode: "0600", owner: root}], master: [...], worker: [...]}
    certificates: {genesis: [{path: ..., ca: kubernetes-etcd}], ...}
    units: {common: [containerd.service], ...}                  # enabled and active
    stages:
      - name: genesis
        run: {node: n0, script: genesis.sh}     # one action per stage (see ACTIONS)
        roles: {n0: genesis}                    # role changes after the action (null: gone)
        checks: [test_node, test_files]         # testinfra modules in gates/checks
        etcd_members: [n0]                      # exact membership afterwards
        needs_kubernetes: true                  # skipped (and reported) on sandbox nodes

Actions: ``build`` (``doit certs build tokens`` of a fresh copy of the site;
``{without_certificates_for: [node]}`` withholds the node's PKICatalog entries and their
consumers, and only that node's scripts may fail to build), ``run`` (``node``, ``script`` or
``api: {labels: [...]}`` for the join-scripts API, ``args``, ``expect: success|failure``,
``unchanged: true``: nothing under /etc, /usr/local, /opt changes), ``missing_script``
(``node``: its join script must not be handed out), ``power_off``/``power_on``/
``power_cycle``/``wipe`` (node lists), ``teardown`` (``node``: its etcd anchor stops,
``promenade-teardown`` runs, then power off, wipe, power on) and ``exec`` (``node``,
``command``). Scripts are fetched from ``doit serve`` run where nodes reach it (else copied
over ssh). The runner always powers everything down at the end, also on failure and SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import jsonschema
import yaml

from promenade.errors import Problem, PromenadeError
from promenade.gates import daemonsets
from promenade.gates.checks import run_checks
from promenade.gates.provider import GateError, Node, Provider
from promenade.gates.report import Report, StageResult

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS_DIR = os.path.join(REPO, "gates")
PROBLEM_SUBJECT = re.compile(r"\[deckhand/Certificate(?:Key)?/v1 ([^\]]+)\]")
NODE_SCRIPT = re.compile(r"^(?:join|validate)-(.+)\.sh$")
SERVER_PORT = 9000
ETCD_ROLES = ("genesis", "master")
BUILD_TASKS = ("certs", "build", "tokens")
KUBERNETES_MISSING = "needs kubelet/kube-apiserver, which cannot be installed on sandbox nodes"
ACTIONS = ("build", "run", "missing_script", "power_off", "power_on", "power_cycle", "wipe", "teardown", "exec")
NODE_LIST = {"type": "array", "items": {"type": "string"}, "minItems": 1}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["nodes", "stages"],
    "properties": {
        "description": {"type": "string"},
        "site": {"type": "string"},
        "overlay": {"type": "string"},
        "nodes": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
        "etcdctl": {"type": "object", "additionalProperties": {"type": "string"}},
        "files": {"type": "object", "additionalProperties": {"type": "array"}},
        "certificates": {"type": "object", "additionalProperties": {"type": "array"}},
        "units": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "stages": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "build": {"type": "object"},
                "run": {"type": "object", "required": ["node"], "additionalProperties": False,
                        "oneOf": [{"required": ["script"]}, {"required": ["api"]}],
                        "properties": {"node": {"type": "string"}, "script": {"type": "string"},
                                       "api": {"type": "object", "additionalProperties": False,
                                               "properties": {"labels": {"type": "array",
                                                                         "items": {"type": "string"}}}},
                                       "args": {"type": "string"}, "unchanged": {"type": "boolean"},
                                       "expect": {"enum": ["success", "failure"]}}},
                "missing_script": {"type": "object", "required": ["node"]},
                "power_off": NODE_LIST, "power_on": NODE_LIST, "power_cycle": NODE_LIST, "wipe": NODE_LIST,
                "teardown": {"type": "object", "required": ["node"]},
                "exec": {"type": "object", "required": ["node", "command"]},
                "roles": {"type": "object"},
                "checks": {"type": "array", "items": {"type": "string"}},
                "etcd_members": {"type": "array", "items": {"type": "string"}},
                "needs_kubernetes": {"type": "boolean"},
            },
        }},
    },
}


@dataclass
class Scenario:
    """A loaded scenario file."""

    name: str
    path: str
    spec: dict

    @property
    def nodes(self) -> list[Node]:
        return [Node(name, address) for name, address in self.spec["nodes"].items()]


def scenario_names() -> list[str]:
    return sorted(entry[:-5] for entry in os.listdir(SCENARIOS_DIR) if entry.endswith(".yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """Load and validate ``gates/<name>.yaml`` (or a path); problems name file and path."""
    path = name_or_path if name_or_path.endswith(".yaml") else os.path.join(SCENARIOS_DIR, f"{name_or_path}.yaml")
    try:
        with open(path, encoding="utf-8") as handle:
            spec = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise PromenadeError(Problem(f"cannot load scenario: {exc}", file=path)) from None
    problems = [Problem(error.message, file=path, path="." + ".".join(str(p) for p in error.absolute_path))
                for error in jsonschema.Draft7Validator(SCHEMA).iter_errors(spec)]
    if not problems:
        for index, stage in enumerate(spec["stages"]):
            actions = [key for key in ACTIONS if key in stage]
            if len(actions) > 1:
                problems.append(Problem(f"stage {stage['name']!r} has several actions: {actions}",
                                        file=path, path=f".stages.{index}"))
    if problems:
        raise PromenadeError(problems)
    return Scenario(os.path.basename(path)[:-5], path, spec)


def _pki_documents(build_dir: str) -> dict[str, str]:
    """CA name -> PEM certificate, from the build's ``certificates.yaml``."""
    cas = {}
    with open(os.path.join(build_dir, "certificates.yaml"), encoding="utf-8") as handle:
        for doc in yaml.safe_load_all(handle):
            if doc and doc.get("schema") == "deckhand/CertificateAuthority/v1":
                cas[doc["metadata"]["name"]] = doc["data"]
    return cas


def withhold_certificates(site_dir: str, target: str, nodes: list[str], all_nodes: list[str]) -> list[str]:
    """Copy the site to ``target`` without ``nodes``' own PKICatalog entries (those whose hosts
    name only these nodes) and without the substitutions that consume them, as a site looks
    before those nodes' certificates are added; return the withheld certificate names."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(site_dir, target)
    withheld: set[str] = set()
    files = []
    for dirpath, _dirs, names in sorted(os.walk(target)):
        for entry in sorted(names):
            if entry.endswith((".yaml", ".yml")):
                path = os.path.join(dirpath, entry)
                with open(path, encoding="utf-8") as handle:
                    files.append((path, list(yaml.safe_load_all(handle))))
    for _path, docs in files:
        for doc in docs:
            if not doc or doc.get("schema") != "promenade/PKICatalog/v1":
                continue
            for ca in (doc["data"].get("certificate_authorities") or {}).values():
                keep = []
                for cert in ca.get("certificates") or []:
                    owners = {str(h) for h in cert.get("hosts") or []} & set(all_nodes)
                    if owners and owners <= set(nodes):
                        withheld.add(cert["document_name"])
                    else:
                        keep.append(cert)
                ca["certificates"] = keep
    if not withheld:
        raise GateError(f"{site_dir}: no PKICatalog entries belong only to {', '.join(nodes)}")
    for path, docs in files:
        for doc in docs:
            subs = (doc or {}).get("metadata", {}).get("substitutions")
            if subs:
                doc["metadata"]["substitutions"] = [
                    sub for sub in subs if not (sub.get("src", {}).get("schema", "").startswith("deckhand/Certificate")
                                                and sub["src"].get("name") in withheld)]
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump_all(docs, handle, sort_keys=False)
    return sorted(withheld)


class Runner:
    """Runs one scenario's stages on a provider and records the results."""

    def __init__(self, scenario: Scenario, provider: Provider, out_dir: str, progress=print):
        self.scenario = scenario
        self.provider = provider
        self.report = Report(scenario.name, out_dir, provider.name, progress)
        self.work = os.path.abspath(os.path.join(self.report.dir, "work"))
        self.build_dir = os.path.join(self.work, "build")
        self.roles: dict[str, str] = {}
        self.progress = progress
        self._anchored: set[str] = set()
        self._serving: subprocess.Popen | None = None
        self.design_root = os.path.join(self.work, "designs")
        self.design = os.path.join(self.design_root, "site")

    # actions -------------------------------------------------------------------------
    def _build(self, spec: dict) -> None:
        site = os.path.join(REPO, self.scenario.spec.get("site", "site"))
        if self.scenario.spec.get("overlay"):
            merged = os.path.join(self.work, "site-overlaid")
            shutil.rmtree(merged, ignore_errors=True)
            shutil.copytree(site, merged)
            shutil.copytree(os.path.join(REPO, self.scenario.spec["overlay"]), merged, dirs_exist_ok=True)
            site = merged
        staged = os.path.join(self.work, "site")
        left_out = spec.get("without_certificates_for") or []
        withheld = withhold_certificates(site, staged, left_out, list(self.scenario.spec["nodes"])) if left_out else []
        if not left_out:
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(site, staged)
        for task in BUILD_TASKS:
            # with nodes withheld, build everything else (their scripts are expected to fail)
            argv = [sys.executable, "-m", "doit", "-f", os.path.join(REPO, "dodo.py"), "--dir", REPO,
                    *(["--continue"] if withheld else []), task, f"site={staged}", f"out={self.build_dir}"]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            output = result.stdout + result.stderr
            if result.returncode == 0:
                continue
            # without certificates the withheld nodes' scripts must be refused, and nothing else
            problems = PROBLEM_SUBJECT.findall(output)
            if not (withheld and problems and all(name in withheld for name in problems)):
                raise GateError(f"doit {task} failed ({result.returncode}):\n{output[-3000:]}")
            self.progress(f"    doit {task} refused, as expected, what needs {', '.join(sorted(set(problems)))}")
        # the design the API renders on demand: the site plus its certificates (as Drydock has it)
        shutil.rmtree(self.design, ignore_errors=True)
        shutil.copytree(staged, self.design)
        shutil.copy2(os.path.join(self.build_dir, "certificates.yaml"), os.path.join(self.design, "certificates.yaml"))

    def _server(self) -> str | None:
        """URL of ``doit serve``'s server for this run's build (started on first use), or None
        when nodes cannot reach the gate host (scripts are then copied over ssh)."""
        address = self.provider.gate_address()
        if address is None:
            return None
        url = f"http://{address}:{SERVER_PORT}"
        if self._serving is None:
            argv = [sys.executable, "-m", "promenade.server", "--host", address, "--port", str(SERVER_PORT),
                    "--out", self.build_dir, "--design-root", self.design_root]
            self._serving = self.provider.spawn_service(argv, os.path.join(self.report.dir, "serve.log"))
            for _ in range(100):  # the server answers within a few seconds
                if self._serving.poll() is not None:
                    raise GateError(f"doit serve exited {self._serving.returncode}; see {self.report.dir}/serve.log")
                probe = self.provider.exec(next(iter(self.provider.nodes)), f"curl -fsS -o /dev/null --max-time 2 "
                                           f"{url}/api/v1.0/health", check=False)
                if probe.returncode == 0:
                    break
                time.sleep(0.3)
            else:
                raise GateError(f"doit serve did not answer at {url}")
        return url

    def _token(self, node: str | None) -> str:
        """The download token of ``node`` (None: the provisioner's) from the build's tokens.yaml."""
        with open(os.path.join(self.build_dir, "tokens.yaml"), encoding="utf-8") as handle:
            tokens = yaml.safe_load(handle)
        return tokens["nodes"][node] if node else tokens["provisioner"]

    def _fetch(self, node: str, path: str, token_of: str | None) -> tuple[int, str]:
        """Download ``path`` from the server onto ``node`` as a provisioner would; (curl status, remote file)."""
        remote = f"/root/promenade/{os.path.basename(path.split('?')[0]) or 'join.sh'}"
        self.provider.put(node, f"Authorization: Bearer {self._token(token_of)}\n".encode(),
                          "/root/promenade/auth-header", mode=0o600)
        result = self.provider.exec(node, f"curl -fsS --max-time 120 -H @/root/promenade/auth-header "
                                          f"-o {remote} '{self._server()}/{path}' && chmod 700 {remote}", check=False)
        return result.returncode, remote

    def _deliver(self, node: str, spec: dict) -> str:
        """Place the stage's script on ``node``: fetched from the server if there is one (the
        API for ``api:``), else copied over ssh from the build."""
        if "api" in spec:
            query = urlencode([("design_ref", self.design), ("hostname", node), ("ip", self.provider.address(node))]
                              + [("labels.dynamic", label) for label in spec["api"].get("labels", [])])
            if self._server() is None:
                raise GateError("the join-scripts API needs nodes that reach the gate host (gate_address)")
            status, remote = self._fetch(node, f"api/v1.0/join-scripts?{query}", None)
            if status != 0:
                raise GateError(f"{node}: the join-scripts API refused: {self._api_error(node, query)}")
            return remote
        script = spec["script"]
        if self._server() is not None:
            owner = NODE_SCRIPT.match(script)
            status, remote = self._fetch(node, script, owner.group(1) if owner else None)
            if status != 0:
                raise GateError(f"{node}: cannot fetch {script} from doit serve (curl exit {status})")
            return remote
        local = os.path.join(self.build_dir, script)
        if not os.path.exists(local):
            raise GateError(f"{script}: not in the build ({self.build_dir})")
        remote = f"/root/promenade/{script}"
        with open(local, "rb") as handle:
            self.provider.put(node, handle.read(), remote, mode=0o700)
        return remote

    def _api_error(self, node: str, query: str) -> str:
        body = self.provider.exec(node, f"curl -sS --max-time 120 -H @/root/promenade/auth-header "
                                        f"'{self._server()}/api/v1.0/join-scripts?{query}'", check=False)
        return body.stdout.decode(errors="replace")[-2000:]

    def _run(self, spec: dict) -> None:
        node = spec["node"]
        script = spec.get("script", "join script from the API")
        remote = self._deliver(node, spec)
        if spec.get("unchanged"):
            self.provider.exec(node, "touch /run/promenade-gate-mark && sleep 1")
        result = self.provider.exec(node, f"bash {remote} {spec.get('args', '')}", check=False, timeout=900)
        expect = spec.get("expect", "success")
        output = (result.stdout + result.stderr).decode(errors="replace")[-3000:]
        if expect == "success" and result.returncode != 0:
            raise GateError(f"{node}: {script} exited {result.returncode}:\n{output}")
        if expect == "failure" and result.returncode == 0:
            raise GateError(f"{node}: {script} succeeded but must fail:\n{output}")
        if spec.get("unchanged"):
            changed = self.provider.exec(
                node, "find /etc /usr/local /opt -xdev -newer /run/promenade-gate-mark -type f "
                      "-not -path '/etc/promenade-gate*' 2>/dev/null | sort").stdout.decode().split()
            if changed:
                raise GateError(f"{node}: running {script} again changed {', '.join(changed)}")

    def _missing_script(self, spec: dict) -> None:
        node = spec["node"]
        script = f"join-{node}.sh"
        if self._server() is not None:
            status, _ = self._fetch(node, script, node)
            if status == 0:
                raise GateError(f"{node}: doit serve handed out {script}, but {node} has no certificates yet")
        elif os.path.exists(os.path.join(self.build_dir, script)):
            raise GateError(f"{script} was built, but {node} has no certificates yet")

    def _teardown(self, spec: dict) -> None:
        node = spec["node"]
        if node in self._anchored:  # the label removal of promenade-teardown deletes the anchor pod
            daemonsets.unschedule(self.provider, node)
            self._anchored.discard(node)
        self.provider.exec(node, "promenade-teardown", timeout=900)
        self.provider.power_off(node)
        self.provider.wipe(node)
        self.provider.power_on(node)

    def _assign_roles(self, roles: dict) -> None:
        """Record who is checked as what (null: not checked); without a kubelet, schedule the
        etcd anchor on new members as its DaemonSet would (:mod:`promenade.gates.daemonsets`)."""
        for name, role in roles.items():
            if role is None:
                self.roles.pop(name, None)
            else:
                self.roles[name] = role
        if self.provider.has_kubernetes:
            return
        members = [n for n, r in self.roles.items() if r in ETCD_ROLES]
        if members and not os.path.isdir(os.path.join(self.build_dir, "state", "rendered")):
            raise GateError(f"etcd members {', '.join(members)} need the site: put a build stage first")
        for name in members:
            if name not in self._anchored:
                daemonsets.schedule(self.provider, self.build_dir, name,
                                    [self.provider.address(n) for n in members])
                self._anchored.add(name)

    def _do(self, stage: dict) -> None:
        if "build" in stage:
            self._build(stage["build"])
        elif "run" in stage:
            self._run(stage["run"])
        elif "missing_script" in stage:
            self._missing_script(stage["missing_script"])
        elif "power_cycle" in stage:
            self.provider.power_cycle(stage["power_cycle"])
        elif "teardown" in stage:
            self._teardown(stage["teardown"])
        elif "exec" in stage:
            self.provider.exec(stage["exec"]["node"], stage["exec"]["command"], timeout=900)
        for action in ("power_off", "wipe", "power_on"):
            for node in stage.get(action, []):
                getattr(self.provider, action)(node)

    # checks --------------------------------------------------------------------------
    def context(self, stage: dict) -> dict:
        """What the testinfra checks of ``stage`` expect (see ``gates/checks/conftest.py``)."""
        spec = self.scenario.spec
        built = os.path.exists(os.path.join(self.build_dir, "certificates.yaml"))
        cas = _pki_documents(self.build_dir) if built else {}
        nodes = {}
        for name, role in self.roles.items():
            nodes[name] = {
                "address": spec["nodes"][name], "role": role,
                "files": [f for key in ("common", role) for f in (spec.get("files") or {}).get(key, [])],
                "certificates": [c for key in ("common", role) for c in (spec.get("certificates") or {}).get(key, [])],
                "units": [u for key in ("common", role) for u in (spec.get("units") or {}).get(key, [])],
            }
        return {"scenario": self.scenario.name, "stage": stage["name"], "provider": self.provider.name,
                "kubernetes": self.provider.has_kubernetes, "nodes": nodes, "cas": cas,
                "all_nodes": {name: {"address": address} for name, address in spec["nodes"].items()},
                "etcdctl": spec.get("etcdctl", {}), "etcd_members": stage.get("etcd_members"),
                "etcd_nodes": sorted(n for n, r in self.roles.items() if r in ETCD_ROLES)}

    def _check(self, stage: dict, result: StageResult) -> None:
        """Run the etcd membership check on every etcd member, then the stage's check modules
        on every node with a role; a failed check fails the stage."""
        context = self.context(stage)
        runs = [(list(stage.get("checks", [])), sorted(self.roles), stage["name"])]
        if stage.get("etcd_members") is not None:  # first: it waits for membership to converge
            runs.insert(0, (["test_etcd_members"], context["etcd_nodes"], f"{stage['name']}.etcd"))
        for modules, hosts, label in runs:
            if not modules or not hosts:
                continue
            outcome = run_checks(modules, self.provider.testinfra_hosts(hosts), self.provider.ssh_config(),
                                 context, os.path.join(self.report.dir, "checks", f"{label}.xml"))
            result.passed += outcome.passed
            result.skipped.update(outcome.skipped)
            if not outcome.ok:
                raise GateError(f"checks failed: {', '.join(outcome.failed)}\n{outcome.output[-4000:]}")

    # running -------------------------------------------------------------------------
    def run(self) -> Report:
        """Boot the nodes, run every stage until one fails, always power everything down."""
        stages = self.scenario.spec["stages"]
        shutil.rmtree(self.work, ignore_errors=True)  # every run builds from scratch
        os.makedirs(self.work, mode=0o700)  # the build holds private keys
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
        try:
            boot = StageResult("boot")
            self.report.stage_started(0, len(stages), "boot")
            start = time.monotonic()
            try:
                self.provider.up()
            except GateError as exc:
                boot.ok, boot.message = False, str(exc)
            boot.seconds = time.monotonic() - start
            self.report.add(boot)
            for index, stage in enumerate(stages if boot.ok else [], 1):
                self.report.stage_started(index, len(stages), stage["name"])
                result = StageResult(stage["name"])
                start = time.monotonic()
                if stage.get("needs_kubernetes") and not self.provider.has_kubernetes:
                    result.skipped[stage["name"]] = KUBERNETES_MISSING
                    self.report.add(result)
                    continue
                try:
                    self._do(stage)
                    self._assign_roles(stage.get("roles") or {})
                    self._check(stage, result)
                except (GateError, PromenadeError, subprocess.TimeoutExpired) as exc:
                    result.ok, result.message = False, str(exc)
                result.seconds = time.monotonic() - start
                self.report.add(result)
                if not result.ok:
                    self._collect_logs(stage)
                    break
        finally:
            if self._serving is not None:
                self._serving.terminate()
                self._serving.wait(timeout=30)
            self.provider.down()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.report.write_junit()
        self.progress(self.report.summary())
        return self.report

    def _collect_logs(self, stage: dict) -> None:
        involved = {stage.get(key, {}).get("node") for key in ("run", "teardown", "exec") if key in stage}
        for node in sorted((involved - {None}) | set(self.roles)):
            try:
                path = self.report.save_log(node, self.provider.collect_logs(node))
                self.progress(f"    logs of {node}: {path}")
            except (GateError, subprocess.TimeoutExpired) as exc:
                self.progress(f"    no logs from {node}: {exc}")


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def make_provider(scenario: Scenario, provider: str = "sandbox", hosts_file: str | None = None,
                  progress=print) -> Provider:
    """The provider named ``provider`` for ``scenario``'s nodes."""
    if provider == "sandbox":
        from promenade.gates.sandbox import Sandbox

        return Sandbox(scenario.nodes, progress=progress)
    if provider == "ssh":
        if not hosts_file:
            raise GateError("the ssh provider needs a hosts file (hosts=FILE)")
        from promenade.gates.ssh import SshHosts

        return SshHosts(scenario.nodes, hosts_file, progress=progress)
    raise GateError(f"unknown provider {provider!r} (sandbox or ssh)")


def run_gate(name: str, out_dir: str, provider: str = "sandbox", hosts_file: str | None = None,
             progress=print) -> Report:
    """Load scenario ``name`` and run it; the entry point of ``doit gate:<name>`` and the tests."""
    scenario = load_scenario(name)
    return Runner(scenario, make_provider(scenario, provider, hosts_file, progress), out_dir, progress).run()
