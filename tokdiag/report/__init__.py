"""Report: run notebooks in kernels, export offline HTML, run plans, write the index.

In the order a batch uses them:

- :mod:`~tokdiag.report.plan`: the plan file, its runs and their parameters;
- :mod:`~tokdiag.report.folders`: what tokdiag may delete or overwrite (run folders, marked files);
- :mod:`~tokdiag.report.kernel`: one notebook in its own kernel (papermill);
- :mod:`~tokdiag.report.scrub`: no absolute paths of the machine, sanitized HTML;
- :mod:`~tokdiag.report.export`: self-contained offline HTML of an executed notebook;
- :mod:`~tokdiag.report.summary`: the ``summary.json`` headlines a notebook leaves for the index;
- :mod:`~tokdiag.report.results`: what a run and a batch produced;
- :mod:`~tokdiag.report.batch`: one run, and a plan's runs several at once (``tokdiag run``, ``tokdiag batch``);
- :mod:`~tokdiag.report.index`: the index page of a batch, built from the results;
- :mod:`~tokdiag.report.cluster`, :mod:`~tokdiag.report.cluster_batch`, :mod:`~tokdiag.report.cluster_task`:
  the same runs on a Dask cluster (``tokdiag batch --cluster``): connecting, the client's batch, the
  task on a worker;
- :mod:`~tokdiag.report.journal_report`: a report from journals alone (``tokdiag report``);
- :mod:`~tokdiag.report.pages`: what every page shares (its Content-Security-Policy, the jinja templates);
- ``templates/``: the pages' jinja templates; ``notebooks/``: the notebooks shipped with the package
  (the journal report).

The top of the pipeline: it may import any part of tokdiag; only the command
line and the IPython magic import it.
"""
