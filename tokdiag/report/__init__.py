"""Reports and how runs are carried out: kernels, plans and batches, HTML, the index (see DESIGN.md, "report").

Today only :mod:`tokdiag.report.cluster` lives here; the flat modules it sits
beside (``tokdiag.batch``, ``tokdiag.export``, ``tokdiag.summary``) move in
with the package layout change.
"""
