"""Pulumi mocks that record every registered resource, so a stack can be checked without AWS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

ACCOUNT_ID = "123456789012"
# The key the engine marks a secret value with in serialized properties (not a credential).
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # noqa: S105
# The digest every mocked `ecr.get_image` answers with.
IMAGE_DIGEST = "sha256:" + "0123456789abcdef" * 4


@dataclass(frozen=True)
class RecordedResource:
    """One resource as the engine saw it: its inputs (camelCase) and the outputs we returned."""

    type: str
    name: str
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    provider: str | None
    secret_inputs: frozenset[str] = frozenset()
    # Resource options the engine never shows the mocks, recorded when the resource is built.
    protect: bool = False
    retain_on_delete: bool = False

    @property
    def id(self) -> str:
        return str(self.outputs["id"])

    def json(self, key: str) -> Any:
        """An input that holds a JSON document (policies, container definitions), parsed."""
        return json.loads(self.inputs[key])


@dataclass
class StackRecord:
    """Everything one build of the stack registered and invoked."""

    resources: list[RecordedResource] = field(default_factory=list)
    invokes: list[str] = field(default_factory=list)
    invoke_args: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    # (type, name) -> (protect, retain_on_delete), as the program asked for them.
    options: dict[tuple[str, str], tuple[bool, bool]] = field(default_factory=dict)
    # (type, name) -> the names of the resources it explicitly depends on.
    depends_on: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def __iter__(self) -> Iterator[RecordedResource]:
        return iter(self.resources)

    def of_type(self, type_: str) -> list[RecordedResource]:
        return [resource for resource in self.resources if resource.type == type_]

    def one(self, type_: str, name: str) -> RecordedResource:
        matches = [r for r in self.of_type(type_) if r.name == name]
        if len(matches) != 1:
            known = sorted(r.name for r in self.of_type(type_))
            raise LookupError(f"{len(matches)} {type_} named {name!r}; known: {known}")
        return matches[0]

    def with_output(self, key: str, value: Any) -> RecordedResource:
        """The resource whose output `key` is `value` (resolving a reference back to its owner)."""
        matches = [r for r in self.resources if r.outputs.get(key) == value]
        if len(matches) != 1:
            raise LookupError(f"{len(matches)} resources have {key}={value!r}")
        return matches[0]


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIGNATURE in value


def _reveal(value: Any) -> Any:
    """The value with every secret wrapper removed, at any depth."""
    if _is_secret(value):
        return _reveal(value["value"])
    if isinstance(value, dict):
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_reveal(item) for item in value]
    return value


def _service(type_: str) -> str:
    return type_.split(":")[1].split("/")[0]


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks every invoke the program makes (and refuses others); records every resource."""

    def __init__(self, region: str, zones: list[str]) -> None:
        self.region = region
        self.zones = zones
        self.record = StackRecord()

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        secret_inputs = frozenset(key for key, value in args.inputs.items() if _is_secret(value))
        inputs = _reveal(dict(args.inputs))
        name = inputs.get("name") or inputs.get("namePrefix") or args.name
        outputs = {**inputs, **self._computed(args.typ, args.name, str(name), inputs)}
        resource_id = str(outputs.pop("id", f"{args.name}-id"))
        protect, retain = self.record.options.get((args.typ, args.name), (False, False))
        self.record.resources.append(
            RecordedResource(
                type=args.typ,
                name=args.name,
                inputs=inputs,
                outputs={**outputs, "id": resource_id},
                provider=args.provider,
                secret_inputs=secret_inputs,
                protect=protect,
                retain_on_delete=retain,
            )
        )
        return resource_id, outputs

    def _computed(
        self, typ: str, logical: str, name: str, inputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        region, account = self.region, ACCOUNT_ID
        service = _service(typ) if ":" in typ else "pulumi"
        computed: dict[str, Any] = {"name": name}
        if "arn" not in inputs:
            # Some resources take an `arn` input (an event target's, a topic policy's topic).
            computed["arn"] = (
                f"arn:aws:{service}:{region}:{account}:{typ.rsplit(':', 1)[-1]}/{logical}"
            )
        by_type: dict[str, Callable[[], dict[str, Any]]] = {
            "aws:kms/key:Key": lambda: {
                "arn": f"arn:aws:kms:{region}:{account}:key/{logical}-0000",
                "keyId": f"{logical}-0000",
            },
            "aws:rds/proxy:Proxy": lambda: {
                "endpoint": f"{name}.proxy-abc.{region}.rds.amazonaws.com",
                "arn": f"arn:aws:rds:{region}:{account}:db-proxy:prx-{logical}",
            },
            "aws:ecs/service:Service": lambda: {
                "id": f"arn:aws:ecs:{region}:{account}:service/{inputs['cluster']}/{name}",
            },
            "aws:ecs/taskDefinition:TaskDefinition": lambda: {
                "arn": f"arn:aws:ecs:{region}:{account}:task-definition/{inputs['family']}:1",
            },
            "random:index/randomId:RandomId": lambda: {"hex": "a1b2c3d4"},
            "aws:sqs/queue:Queue": lambda: {
                "arn": f"arn:aws:sqs:{region}:{account}:{name}",
                "url": f"https://sqs.{region}.amazonaws.com/{account}/{name}",
            },
            "aws:s3/bucket:Bucket": lambda: {
                "id": inputs["bucket"],
                "arn": f"arn:aws:s3:::{inputs['bucket']}",
            },
            "aws:rds/instance:Instance": lambda: {
                "address": f"{inputs['identifier']}.abc.{region}.rds.amazonaws.com",
                "endpoint": f"{inputs['identifier']}.abc.{region}.rds.amazonaws.com:5432",
                "arn": f"arn:aws:rds:{region}:{account}:db:{inputs['identifier']}",
            },
            "aws:elasticache/replicationGroup:ReplicationGroup": lambda: {
                "arn": f"arn:aws:elasticache:{region}:{account}:replicationgroup:"
                f"{inputs['replicationGroupId']}",
                "primaryEndpointAddress": f"master.{inputs['replicationGroupId']}.abc.euw1"
                ".cache.amazonaws.com",
                "readerEndpointAddress": f"replica.{inputs['replicationGroupId']}.abc.euw1"
                ".cache.amazonaws.com",
                "memberClusters": [
                    f"{inputs['replicationGroupId']}-{index:03d}"
                    for index in range(1, int(inputs["numCacheClusters"]) + 1)
                ],
            },
            "aws:lb/loadBalancer:LoadBalancer": lambda: {
                "arnSuffix": f"app/{name}/0123456789abcdef",
                "dnsName": f"{name}-123.{region}.elb.amazonaws.com",
            },
            "aws:lb/targetGroup:TargetGroup": lambda: {
                "arnSuffix": f"targetgroup/{name}0001/fedcba9876543210",
            },
            "aws:ecr/repository:Repository": lambda: {
                "repositoryUrl": f"{account}.dkr.ecr.{region}.amazonaws.com/{name}",
            },
            "aws:cloudwatch/logGroup:LogGroup": lambda: {
                "arn": f"arn:aws:logs:{region}:{account}:log-group:{name}",
            },
            "aws:lambda/function:Function": lambda: {
                "arn": f"arn:aws:lambda:{region}:{account}:function:{name}",
            },
            "aws:secretsmanager/secret:Secret": lambda: {
                "arn": f"arn:aws:secretsmanager:{region}:{account}:secret:{name}-AbCdEf",
            },
            "random:index/randomPassword:RandomPassword": lambda: {
                "result": "generatedpassword0123456789abcdef",
            },
        }
        computed.update(by_type.get(typ, dict)())
        return computed

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.record.invokes.append(args.token)
        self.record.invoke_args.append((args.token, dict(args.args)))
        answers: dict[str, dict[str, Any]] = {
            "aws:index/getAvailabilityZones:getAvailabilityZones": {
                "id": self.region,
                "names": self.zones,
                "zoneIds": [f"euw1-az{i + 1}" for i in range(len(self.zones))],
            },
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "id": ACCOUNT_ID,
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/test",
                "userId": "AIDATEST",
            },
            "aws:index/getPartition:getPartition": {
                "id": "aws",
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
            },
            "aws:index/getRegion:getRegion": {
                "id": self.region,
                "name": self.region,
                "region": self.region,
                "endpoint": f"ec2.{self.region}.amazonaws.com",
                "description": self.region,
            },
            "aws:ecr/getImage:getImage": {
                "id": IMAGE_DIGEST,
                "imageDigest": IMAGE_DIGEST,
                "imageTags": [args.args.get("imageTag")],
                "repositoryName": args.args.get("repositoryName"),
                "registryId": ACCOUNT_ID,
            },
        }
        if args.token not in answers:
            raise NotImplementedError(
                f"the program made an invoke the mocks do not know: {args.token}"
            )
        return answers[args.token], []


def ensure_event_loop() -> None:
    """Give the thread a usable event loop: pulumi.runtime.test runs on the current one, and
    other tests (pytest-asyncio) may have closed or unset it. Outputs made before a recording
    (e.g. `Output.secret` in a config) must be made after this call, on the same loop."""
    try:
        usable = not asyncio.get_event_loop_policy().get_event_loop().is_closed()
    except RuntimeError:
        usable = False
    if not usable:
        asyncio.set_event_loop(asyncio.new_event_loop())


def record_stack(
    build: Callable[[], Mapping[str, pulumi.Input[Any]]],
    *,
    project: str,
    stack: str,
    region: str,
    zones: list[str],
) -> StackRecord:
    """Run `build` under recording mocks (no preview) and return what it registered.

    `pulumi.runtime.test` waits for every outstanding registration and output before it
    returns, so the record is complete once this function returns.
    """
    mocks = RecordingMocks(region, zones)
    ensure_event_loop()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False)

    def remember_options(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        key = (args.type_, args.name)
        mocks.record.options[key] = (bool(args.opts.protect), bool(args.opts.retain_on_delete))
        depends_on = args.opts.depends_on
        resources = depends_on if isinstance(depends_on, list) else [depends_on]
        mocks.record.depends_on[key] = {
            str(resource._name)  # the mocks cannot see a resource name otherwise
            for resource in resources
            if isinstance(resource, pulumi.Resource)
        }
        return None

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # pulumi leaves it unannotated
    def run() -> pulumi.Output[Any]:
        pulumi.runtime.register_stack_transformation(remember_options)
        outputs = build()
        return pulumi.Output.from_input(dict(outputs)).apply(mocks.record.outputs.update)

    run()
    return mocks.record
