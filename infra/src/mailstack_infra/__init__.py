"""The Pulumi program that declares mailstack on AWS."""
