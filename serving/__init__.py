"""The live buyer-intent service (BentoML): `serving.service:BuyerIntent`.

`serving.schemas` holds the request/response models and the limits from the `serving:` config
section, `serving.runtime` finds, verifies, loads and warms the model and batches predictions,
`serving.service` is the BentoML service. None of it imports training code.
"""
