"""Task pipelines: classification, extraction, workflows, document analysis, usage.

:class:`~engine.tasks.service.TaskService` is built and opened by the composition root
(:func:`engine.app.open_hearth`) over the engine, the database, the job service and the document
service.
"""
