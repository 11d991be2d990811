"""AWS Backup for the primary database: a vault, a daily plan and the selection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mailstack_infra.iam import trust_policy

# After RDS's own backup window (02:00-03:00) and maintenance (Sun 03:30-04:30), in UTC.
SCHEDULE = "cron(0 5 * * ? *)"
KEEP_DAYS = 35
MANAGED_POLICIES = (
    "AWSBackupServiceRolePolicyForBackup",
    "AWSBackupServiceRolePolicyForRestores",
)


@dataclass(frozen=True)
class BackupPlanArgs:
    """What the backup plan needs to know."""

    prefix: str
    resource_arns: Sequence[pulumi.Input[str]]
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    # protect + retain_on_delete on the vault (production: its recovery points outlive us).
    protect: bool = False


class BackupPlan(pulumi.ComponentResource):
    """Daily backups kept five weeks in a vault of their own, apart from RDS's snapshots: a
    deleted instance takes its automated backups with it, these stay."""

    plan: aws.backup.Plan
    vault: aws.backup.Vault
    selection: aws.backup.Selection

    def __init__(
        self, name: str, args: BackupPlanArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:database:BackupPlan", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.vault = aws.backup.Vault(
            f"{name}-vault",
            name=f"{args.prefix}-database",
            force_destroy=False,
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.protect, retain_on_delete=args.protect
            ),
        )
        self.plan = aws.backup.Plan(
            f"{name}-plan",
            name=f"{args.prefix}-database",
            rules=[
                aws.backup.PlanRuleArgs(
                    rule_name="daily",
                    target_vault_name=self.vault.name,
                    schedule=SCHEDULE,
                    start_window=60,
                    completion_window=360,
                    lifecycle=aws.backup.PlanRuleLifecycleArgs(delete_after=KEEP_DAYS),
                )
            ],
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=trust_policy("backup.amazonaws.com", source_account=args.account_id),
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy}",
                role=role.name,
                policy_arn=pulumi.Output.concat(
                    "arn:", args.partition, ":iam::aws:policy/service-role/", policy
                ),
                opts=child,
            )
            for policy in MANAGED_POLICIES
        ]
        self.selection = aws.backup.Selection(
            f"{name}-selection",
            name=f"{args.prefix}-database",
            plan_id=self.plan.id,
            iam_role_arn=role.arn,
            resources=list(args.resource_arns),
            opts=pulumi.ResourceOptions(parent=self, depends_on=attachments),
        )
        self.register_outputs({"plan_id": self.plan.id, "vault": self.vault.name})
