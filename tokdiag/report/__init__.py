"""Report: run notebooks in kernels, export offline HTML, run plans, write the index.

- :mod:`~tokdiag.report.kernel`: one notebook in its own kernel (papermill);
- :mod:`~tokdiag.report.export`: self-contained offline HTML, and reports from journals;
- :mod:`~tokdiag.report.batch`: plans of parameterized notebooks, several at once, and the index page;
- :mod:`~tokdiag.report.cluster`: the same runs on a Dask cluster (``tokdiag batch --cluster``);
- :mod:`~tokdiag.report.summary`: the ``summary.json`` headlines a notebook leaves for the index;
- ``notebooks/``: the notebooks shipped with the package (the journal report).

The top of the pipeline: it may import any part of tokdiag; only the command
line and the IPython magic import it.
"""
