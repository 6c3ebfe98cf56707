"""dchat-ops: credentials and configuration for decentralized NATS chat networks.

The library is the product; the ``dchat-ops`` command line is a thin layer over it.

    from dchat_ops.nsc import Store, admin
    store = Store("/tmp/dchat")
    admin.init(store)
"""

__version__ = "0.1.0"
