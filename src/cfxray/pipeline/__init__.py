"""The Kubeflow pipeline: `cfxray pipeline` (commands), what each step runs in its container
(steps), the KFP components and the pipeline definition (the only modules that import kfp),
and cron validation for scheduled runs."""
