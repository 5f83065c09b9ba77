"""Real servers and processes for the tests and the benchmark (not installed).

* :mod:`testbed.mariadb`: a throwaway ``mariadbd`` with its own datadir and port;
* :mod:`testbed.moto`: fake AWS credentials, an in-process moto server, fresh queue pairs;
* :mod:`testbed.procs`: CPU and peak-RSS figures of live processes, read from ``/proc``.

Both ``tests/`` and ``bench/`` import from here; this package imports neither.
"""
