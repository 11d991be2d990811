"""AWS WAF in front of the ALB: AWS's managed rule sets and a per-IP rate limit."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

w = aws.wafv2
Override = w.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideArgs

# Rules of the common rule set that would block the API's own traffic, so they only count:
# email bodies are larger than 8 KB, and HTML email bodies are the payload, not an attack on
# a browser (the gateway never renders them).
COUNT_ONLY_COMMON_RULES = ("SizeRestrictions_BODY", "CrossSiteScripting_BODY")
MANAGED_RULE_GROUPS = ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet")
LOG_GROUP_PREFIX = "aws-waf-logs-"  # WAF delivers only to log groups named so


@dataclass(frozen=True)
class WebFirewallArgs:
    """What the web ACL needs to know."""

    prefix: str
    load_balancer_arn: pulumi.Input[str]
    requests_per_five_minutes: int
    log_retention_days: int


def _visibility(metric: str) -> w.WebAclRuleVisibilityConfigArgs:
    return w.WebAclRuleVisibilityConfigArgs(
        cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


def _managed_rule(group: str, priority: int) -> w.WebAclRuleArgs:
    overrides = (
        [
            Override(
                name=rule,
                action_to_use=w.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideActionToUseArgs(
                    count=w.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideActionToUseCountArgs()
                ),
            )
            for rule in COUNT_ONLY_COMMON_RULES
        ]
        if group == "AWSManagedRulesCommonRuleSet"
        else None
    )
    return w.WebAclRuleArgs(
        name=group,
        priority=priority,
        # Each rule group's own actions apply (block), except the overrides above.
        override_action=w.WebAclRuleOverrideActionArgs(
            none=w.WebAclRuleOverrideActionNoneArgs()  # type: ignore[no-untyped-call]  # no fields
        ),
        statement=w.WebAclRuleStatementArgs(
            managed_rule_group_statement=w.WebAclRuleStatementManagedRuleGroupStatementArgs(
                name=group, vendor_name="AWS", rule_action_overrides=overrides
            )
        ),
        visibility_config=_visibility(group),
    )


class WebFirewall(pulumi.ComponentResource):
    """A regional web ACL on the ALB, with its blocked requests logged."""

    web_acl: aws.wafv2.WebAcl

    def __init__(
        self, name: str, args: WebFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:edge:WebFirewall", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        acl_name = f"{args.prefix}-edge"
        rate_rule = w.WebAclRuleArgs(
            name="rate-per-ip",
            priority=0,
            action=w.WebAclRuleActionArgs(block=w.WebAclRuleActionBlockArgs()),
            statement=w.WebAclRuleStatementArgs(
                rate_based_statement=w.WebAclRuleStatementRateBasedStatementArgs(
                    limit=args.requests_per_five_minutes,
                    aggregate_key_type="IP",
                    evaluation_window_sec=300,
                )
            ),
            visibility_config=_visibility("rate-per-ip"),
        )
        self.web_acl = aws.wafv2.WebAcl(
            f"{name}-acl",
            name=acl_name,
            description="mailstack API: AWS managed rules and a per-IP rate limit",
            scope="REGIONAL",
            default_action=w.WebAclDefaultActionArgs(allow=w.WebAclDefaultActionAllowArgs()),
            rules=[
                rate_rule,
                *(
                    _managed_rule(group, priority)
                    for priority, group in enumerate(MANAGED_RULE_GROUPS, start=1)
                ),
            ],
            visibility_config=w.WebAclVisibilityConfigArgs(
                cloudwatch_metrics_enabled=True, metric_name=acl_name, sampled_requests_enabled=True
            ),
            opts=child,
        )
        aws.wafv2.WebAclAssociation(
            f"{name}-alb",
            resource_arn=args.load_balancer_arn,
            web_acl_arn=self.web_acl.arn,
            opts=child,
        )
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"{LOG_GROUP_PREFIX}{args.prefix}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        aws.wafv2.WebAclLoggingConfiguration(
            f"{name}-logs",
            resource_arn=self.web_acl.arn,
            log_destination_configs=[logs.arn],
            # What the rules blocked or counted; allowed requests are in the ALB's access logs.
            logging_filter=w.WebAclLoggingConfigurationLoggingFilterArgs(
                default_behavior="DROP",
                filters=[
                    w.WebAclLoggingConfigurationLoggingFilterFilterArgs(
                        behavior="KEEP",
                        requirement="MEETS_ANY",
                        conditions=[
                            w.WebAclLoggingConfigurationLoggingFilterFilterConditionArgs(
                                action_condition=w.WebAclLoggingConfigurationLoggingFilterFilterConditionActionConditionArgs(
                                    action=action
                                )
                            )
                            for action in ("BLOCK", "COUNT")
                        ],
                    )
                ],
            ),
            opts=child,
        )
        self.register_outputs({"web_acl_arn": self.web_acl.arn})
