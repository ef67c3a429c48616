"""From examples to batches: the prompt encoder (`encoding`), training rows (`rows`), language-model
text (`text`), batches with replay (`batches`) and padding-free packing (`packing`)."""
