"""Task pipelines: classification, extraction, workflows, document analysis, usage.

One small service per area (``usage.TaskUsage``, ``classifiers.ClassifierService``,
``extraction.ExtractionService``, ``workflow_service.WorkflowService``,
``analysis.AnalysisService``), built by the composition root (:func:`engine.app.open_tasks`) over
the engine, the database, the job service and the document service.
"""
