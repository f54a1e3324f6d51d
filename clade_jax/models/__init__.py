"""Networks (flax linen, applied as pure functions), one module per architecture.

Import what a method uses from its module (`models.generator`, `models.discriminator`,
`models.sr_network`, `models.autoencoder`); this package exports no method's networks.
"""
