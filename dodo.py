"""doit entry point: configuration, and every task family as a one-line call into ``promenade.tasks``.

The docstrings here are what ``doit list`` shows. Each creator's body stays one call: doit reads
the source of every creator on each run (to order them), and that costs by the line.
"""

from doit import create_after

from promenade.tasks import build, certs, charts, gate, render, serve, session
from promenade.tasks.options import out_dir

session.prepare(out_dir())

DOIT_CONFIG = {
    "default_tasks": ["build"],
    "backend": "sqlite3",
    "dep_file": f"{out_dir()}/.doit.db",
    "check_file_uptodate": "md5",
    "action_string_formatting": "new",
    "verbosity": 2,
    "reporter": build.BuildReporter,
}


def task_render():
    """Render and validate the site (lenient: certificates may be missing) into state/site/."""
    return render.render_task()


def task_validate():
    """Render and validate the site in memory; print a one-line summary or every problem."""
    return render.validate_task()


@create_after(executed="render")
def task_certs_requests():
    """Split the site's PKICatalog documents into one request per CA, certificate and key pair."""
    return certs.requests_task()


@create_after(executed="certs_requests")
def task_certs():
    """Generate the cluster PKI (CAs, certificates, key pairs) into certificates.yaml."""
    return certs.certs_tasks()


@create_after(executed="certs_requests")
def task_certs_uptodate():
    """certificates.yaml matches the PKI requests (runs `certs` only when they or it changed)."""
    return certs.uptodate_task()


def task_certs_check():
    """Expiry report of every CA and certificate (format=json, warn=DAYS); fails if any expired."""
    return certs.check_task()


def task_certs_renew():
    """Re-issue certificates: name=NAME[,NAME] (a CA re-issues its leaves too) or name=all."""
    return certs.renew_tasks(task_certs_renew.__doc__)


def task_render_final():
    """Render the site with its certificates (strict) into state/rendered/."""
    return render.render_final_task()


@create_after(executed="render_final")
def task_build_plan():
    """Split the rendered site into shared documents and what each node owns."""
    return build.plan_task()


@create_after(executed="build_plan")
def task_build_shared():
    """Compress (and encrypt) once the payload every script of a role shares."""
    return build.shared_tasks()


@create_after(executed="build_plan")
def task_build_genesis():
    """Write genesis.sh and validate-genesis.sh."""
    return build.genesis_task()


@create_after(executed="build_plan")
def task_build_node():
    """Write join-<node>.sh and validate-<node>.sh: one task per KubernetesNode (batches on big sites)."""
    return build.node_tasks()


@create_after(executed="build_plan")
def task_build_cluster():
    """Write validate-cluster.sh."""
    return build.cluster_task()


@create_after(executed="build_plan")
def task_build_prune():
    """Remove the scripts of nodes that left the site."""
    return build.prune_task()


def task_build():
    """Build every script: genesis.sh, join-<node>.sh, validate-*.sh (the default task)."""
    return build.build_task()


def task_tokens():
    """Write tokens.yaml: the provisioner token and one download token per node."""
    return serve.tokens_task()


def task_serve():
    """Serve the build directory and the join-scripts API over HTTP(S) until SIGTERM."""
    return serve.serve_task()


@create_after()  # created only when selected: listing every chart file is wasted work for other commands
def task_charts():
    """Assemble the Helm charts with their anchor programs into <out>/charts/."""
    return charts.charts_task()


def task_gate():
    """Gate scenarios on sandbox nodes (or real machines with provider=ssh hosts=FILE)."""
    return gate.gate_tasks()
