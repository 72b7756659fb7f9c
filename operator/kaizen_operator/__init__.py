"""The kopf operator: reconciles Agents, Gateways, ScalingPolicies and Promotions."""
