"""The real client libraries against a Fusion server (issue #16), driven by
tests/it/pipelines.rs, which starts the server and checks what it holds.

    python3 pipelines_clients.py segment|rudder|cloudevents BASE_URL WRITE_KEY

Sends the story of the Rust tests (an identify, an order of two brands, a
review, a support ticket closed, a viewed product, an event the mapping does
not know, an order without a brand) with the named library, then a retry of
the first order with the same message id, and prints one JSON line: the
errors the library reported (none expected), and the answers of the raw
requests made beside it (a malformed batch). Installed by scripts/test:
segment-analytics-python 2.*, rudder-sdk-python 2.*, cloudevents 2.*.
"""

import json
import sys
from datetime import datetime, timezone

import requests


def at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


ORDER = {
    "currency": "USD",
    "products": [
        {"brand": "sweater", "price": 40, "quantity": 2},
        {"brand": "bistro", "price": 25, "quantity": 1},
    ],
}
REVIEW = {"brand": "sweater", "rating": 5, "review_body": "Warm and soft."}
TICKET = {
    "brand": "bistro",
    "channel": "chat",
    "csat": 2,
    "effort": 4,
    "resolved": False,
    "wait_seconds": 300,
    "transfers": 1,
}

# (message id, event, properties, time)
TRACKS = [
    ("m-2", "Order Completed", ORDER, "2026-11-02T10:00:00Z"),
    ("m-3", "Product Reviewed", REVIEW, "2026-11-03T10:00:00Z"),
    ("m-4", "Ticket Closed", TICKET, "2026-11-04T10:00:00Z"),
    ("m-5", "Product Viewed", {"brand": "sweater"}, "2026-11-04T11:00:00Z"),
    ("m-6", "Loyalty Review", {"brand": "sweater", "rating": 4}, "2026-11-05T10:00:00Z"),
    ("m-7", "Order Completed", {"revenue": 10}, "2026-11-05T11:00:00Z"),
]


def tracking_api(module, base, write_key):
    """Segment's library or RudderStack's: the same Tracking API."""
    errors = []
    client = module.Client(
        write_key=write_key,
        host=base,
        gzip=True,
        max_retries=1,
        upload_size=100,
        on_error=lambda e, batch: errors.append(str(e)),
    )
    client.identify(
        "ana",
        {"name": "Ana", "followers": 1200, "interests": ["knitwear"]},
        timestamp=at("2026-11-01T09:00:00Z"),
        message_id="m-1",
    )
    for message_id, event, properties, time in TRACKS:
        client.track("ana", event, properties, timestamp=at(time), message_id=message_id)
    # One gzip batch of the whole story, through the library's consumer.
    client.flush()
    client.join()
    # A retry: the same message again, sent later (a new sentAt).
    retry = module.Client(write_key=write_key, host=base, sync_mode=True, gzip=True)
    retry.track("ana", "Order Completed", ORDER, timestamp=at("2026-11-02T10:00:00Z"), message_id="m-2")
    malformed = requests.post(
        base + "/v1/batch",
        data=b'{"batch": [{"type": ',
        auth=(write_key, ""),
        headers={"Content-Type": "application/json"},
    )
    return {"errors": errors, "malformed": {"status": malformed.status_code, "body": malformed.json()}}


def cloudevents_sdk(base, write_key):
    """The CloudEvents SDK builds and encodes; requests sends."""
    from cloudevents.core.bindings.http import to_binary_event, to_structured_event
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    types = {
        "Order Completed": "com.segment.order.completed",
        "Product Reviewed": "com.segment.product.reviewed",
        "Ticket Closed": "com.segment.ticket.closed",
    }
    auth = {"Authorization": "Bearer " + write_key}
    errors = []

    def event(message_id, name, data, time):
        return CloudEvent(
            attributes={
                "id": message_id,
                "source": "/shop",
                "type": types.get(name, "com.example." + name.lower().replace(" ", ".")),
                "subject": "ana",
                "time": at(time),
            },
            data=data,
        )

    def send(headers, body):
        r = requests.post(base + "/v1/cloudevents", data=body, headers={**headers, **auth})
        if r.status_code != 200:
            errors.append("%s %s" % (r.status_code, r.text))
        return r

    events = [event(*t) for t in TRACKS if t[1] != "Product Viewed"]
    # The order in structured mode, the review in binary mode, the rest as
    # one batch (the SDK writes each event; the batch is their JSON array).
    message = to_structured_event(events[0])
    send(message.headers, message.body)
    message = to_binary_event(events[1])
    send(message.headers, message.body)
    fmt = JSONFormat()
    batch = b"[" + b",".join(fmt.write(e) for e in events[2:]) + b"]"
    send({"Content-Type": "application/cloudevents-batch+json"}, batch)
    # A retry of the order.
    message = to_structured_event(event(*TRACKS[0]))
    retry = send(message.headers, message.body).json()
    return {"errors": errors, "retry": retry}


def main():
    which, base, write_key = sys.argv[1:4]
    if which == "segment":
        import segment.analytics as module

        out = tracking_api(module, base, write_key)
    elif which == "rudder":
        import rudderstack.analytics as module

        out = tracking_api(module, base, write_key)
    elif which == "cloudevents":
        out = cloudevents_sdk(base, write_key)
    else:
        sys.exit("unknown client " + which)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
