"""The Pulumi entry point: reads the stack's config and builds the stack."""

from pathlib import Path

import pulumi

from mailstack_infra.settings import load_resource_settings, load_stack_config
from mailstack_infra.stack import build_stack

REPO_ROOT = Path(__file__).resolve().parent.parent

config = pulumi.Config("mailstack")
stack_config = load_stack_config(
    config,
    project=pulumi.get_project(),
    stack=pulumi.get_stack(),
    region=pulumi.Config("aws").require("region"),
    resources=load_resource_settings(
        REPO_ROOT / (config.get("resourcesFile") or "config/resources.json")
    ),
)
jobs_archive = REPO_ROOT / stack_config.jobs_archive_path
outputs = build_stack(stack_config, pulumi.FileArchive(str(jobs_archive)))
for key, value in outputs.items():
    pulumi.export(key, value)
