"""Importer: public interaction logs → landing days (``python -m jobs.importer movielens ...``).

``formats`` parses the MovieLens files, ``landing`` publishes the days, ``datasets`` fetches the
ones the project may download at run time, ``cli`` is the job.
"""
