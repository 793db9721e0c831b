"""doit task families; each module exports ``task_*`` generators that ``dodo.py`` re-exports."""
