# Serves localstripe on 127.0.0.1 only, in memory, with two fixes that make it behave like
# Stripe where ringledger relies on it. Started by scripts/stack.sh (`up`).
import logging, socket, sys
from aiohttp import web
from localstripe import resources, server
resources.Store.dump_to_disk = lambda self: None

# Stripe accepts `description` on payment intents; localstripe 1.15.10 rejects it as unexpected.
_pi_init = resources.PaymentIntent.__init__
def _pi_init_with_description(self, description=None, **kwargs):
    _pi_init(self, **kwargs)
    self.description = description
resources.PaymentIntent.__init__ = _pi_init_with_description

# Stripe filters the payment-intent list by `customer` (how a payment is found by its key's
# metadata after the key expired); localstripe 1.15.10 rejects the parameter as unexpected.
_pi_list_all = resources.PaymentIntent._api_list_all.__func__
@classmethod
def _pi_list_by_customer(cls, url, limit=None, starting_after=None, customer=None, **kwargs):
    li = _pi_list_all(cls, url, limit=limit, starting_after=starting_after, **kwargs)
    if customer is not None:
        li._list = [pi for pi in li._list if pi.customer == customer]
    return li
resources.PaymentIntent._api_list_all = _pi_list_by_customer

# Stripe Idempotency-Key, which localstripe ignores: the first answer to a POST (errors
# included) is saved per API key + idempotency key and replayed; the same key with another
# path or body is a 400 idempotency_error. Outermost, so it sees the error middleware's answers.
_idempotent = {}
@web.middleware
async def idempotency(request, handler):
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    scope = (request.headers.get("Authorization", ""), key)
    sent = (request.path_qs, await request.read())
    saved = _idempotent.get(scope)
    if saved is None:
        response = await handler(request)
        saved = _idempotent[scope] = (sent, response.status, response.body)
        return response
    if saved[0] != sent:
        return server.json_response({"error": {"type": "idempotency_error", "message":
            "Keys for idempotent requests can only be used with the same parameters they were first used with."}}, status=400)
    return web.Response(status=saved[1], body=saved[2], content_type="application/json",
                        headers={"Idempotent-Replayed": "true"})
server.app.middlewares.insert(0, idempotency)

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
access = logging.getLogger("aiohttp.access")
access.setLevel(logging.INFO)
access.addHandler(logging.StreamHandler())
web.run_app(server.app, sock=sock, access_log=access, print=lambda *a: print(*a, flush=True))
