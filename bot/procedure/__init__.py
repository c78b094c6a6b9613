"""The upgrade procedure of upgrade-facts.md, one small module per phase.

A step is a function ``step(ctx) -> Outcome``: it looks at the world first and acts only if
needed, so running it twice is harmless. ``engine`` runs the steps, records every outcome in
Redis before doing anything else, and renders progress into Slack.
"""
