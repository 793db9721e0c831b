"""doit task families; ``dodo.py`` declares each task in one line that calls its module here."""
