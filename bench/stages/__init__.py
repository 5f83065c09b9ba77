"""The measured paths, one module each, run in this order by :func:`bench.run.run_bench`.

1. :mod:`~bench.stages.load_data`: the ceiling, ``LOAD DATA LOCAL INFILE``;
2. :mod:`~bench.stages.sink`: :meth:`worker.sink.Sink.write` alone on pre-decoded batches;
3. :mod:`~bench.stages.e2e`: ``headrace produce`` + ``headrace worker`` processes;
4. :mod:`~bench.stages.seed_style`: the old pipeline's shape (:mod:`bench.seed`);
5. :mod:`~bench.stages.producer_big`: the producer's peak RSS on a bigger file.

Each stage starts from empty tables, leaves them empty and adds its section to
``ctx.results``.
"""
