"""Secrets Manager secrets: one per provider API key and the database URLs."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class SecretsArgs:
    """What the secrets need to know; values left None are set outside code."""

    prefix: str
    recovery_window_days: int
    elasticemail_api_key: pulumi.Input[str] | None
    sendgrid_api_key: pulumi.Input[str] | None
    # protect + retain_on_delete on every secret (production).
    protect: bool = False
    # The admin-scope API key the metrics collector scrapes the gateway with (None: no secret).
    metrics_api_key: pulumi.Input[str] | None = None
    # The secret ElasticEmail's notification URL carries (None: no secret, notifications refused).
    elasticemail_notification_secret: pulumi.Input[str] | None = None


class Secrets(pulumi.ComponentResource):
    """Secret containers; provider keys come from `pulumi config set --secret` or the console."""

    elasticemail_api_key: aws.secretsmanager.Secret
    sendgrid_api_key: aws.secretsmanager.Secret
    database_url: aws.secretsmanager.Secret
    database_read_url: aws.secretsmanager.Secret
    metrics_api_key: aws.secretsmanager.Secret | None
    elasticemail_notification_secret: aws.secretsmanager.Secret | None

    def __init__(
        self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:secrets:Secrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def secret(key: str, description: str) -> aws.secretsmanager.Secret:
            return aws.secretsmanager.Secret(
                f"{name}-{key}",
                name=f"{args.prefix}/{key}",
                description=description,
                recovery_window_in_days=args.recovery_window_days,
                opts=pulumi.ResourceOptions(
                    parent=self, protect=args.protect, retain_on_delete=args.protect
                ),
            )

        self.elasticemail_api_key = secret("elasticemail-api-key", "ElasticEmail API key")
        self.sendgrid_api_key = secret("sendgrid-api-key", "SendGrid API key")
        self.database_url = secret(
            "database-url", "The app user's URL of the primary, through RDS Proxy"
        )
        self.database_read_url = secret(
            "database-read-url", "The app user's URL for read-only queries (a replica when present)"
        )

        self.metrics_api_key = (
            secret(
                "metrics-api-key",
                "An admin-scope API key: the collector sidecar scrapes the gateway's /metrics",
            )
            if args.metrics_api_key is not None
            else None
        )

        self.elasticemail_notification_secret = (
            secret(
                "elasticemail-notification-secret",
                "The secret in ElasticEmail's notification URL: the gateway accepts its events",
            )
            if args.elasticemail_notification_secret is not None
            else None
        )

        for key, target, value in (
            ("elasticemail-api-key", self.elasticemail_api_key, args.elasticemail_api_key),
            ("sendgrid-api-key", self.sendgrid_api_key, args.sendgrid_api_key),
            ("metrics-api-key", self.metrics_api_key, args.metrics_api_key),
            (
                "elasticemail-notification-secret",
                self.elasticemail_notification_secret,
                args.elasticemail_notification_secret,
            ),
        ):
            if target is not None and value is not None:
                aws.secretsmanager.SecretVersion(
                    f"{name}-{key}", secret_id=target.id, secret_string=value, opts=child
                )

        self.register_outputs(
            {
                "elasticemail_api_key_arn": self.elasticemail_api_key.arn,
                "sendgrid_api_key_arn": self.sendgrid_api_key.arn,
                "database_url_arn": self.database_url.arn,
                "database_read_url_arn": self.database_read_url.arn,
            }
        )

    def set_database_urls(
        self, name: str, url: pulumi.Input[str], read_url: pulumi.Input[str]
    ) -> None:
        """Store the primary and read-only database URLs once the database (or local one) exists."""
        child = pulumi.ResourceOptions(parent=self)
        aws.secretsmanager.SecretVersion(
            f"{name}-database-url",
            secret_id=self.database_url.id,
            secret_string=pulumi.Output.secret(url),
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-database-read-url",
            secret_id=self.database_read_url.id,
            secret_string=pulumi.Output.secret(read_url),
            opts=child,
        )
