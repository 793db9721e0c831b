"""doit entry point: configuration plus the task families, all implemented in ``promenade.tasks``."""

from promenade.tasks import session
from promenade.tasks.options import out_dir
from promenade.tasks.render import *  # noqa: F401,F403
from promenade.tasks.certs import *  # noqa: F401,F403
from promenade.tasks.serve import *  # noqa: F401,F403
from promenade.tasks.build import *  # noqa: F401,F403
from promenade.tasks.gate import *  # noqa: F401,F403
from promenade.tasks.charts import *  # noqa: F401,F403

session.prepare(out_dir())

DOIT_CONFIG = {
    "default_tasks": ["build"],
    "backend": "sqlite3",
    "dep_file": f"{out_dir()}/.doit.db",
    "check_file_uptodate": "md5",
    "action_string_formatting": "new",
    "verbosity": 2,
    "reporter": BuildReporter,  # noqa: F405 (from promenade.tasks.build)
}
