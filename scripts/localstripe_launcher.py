# Serves localstripe on 127.0.0.1 only, in memory, with the fixes below that make it behave like
# Stripe where ringledger relies on it. Started by scripts/stack.sh (`up`).
import asyncio, logging, socket, sys
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
# path or body is a 400 idempotency_error. While the first request with a key is still running,
# another with that key is answered as Stripe does: 409 idempotency_error, nothing saved, retry
# later (never a second payment intent). Outermost, so it sees the error middleware's answers.
# Test hook: `Localstripe-Test-Delay: <ms>` (at most 5000) holds a request that long inside its
# key's running section, so a test can send concurrent requests while the first one runs.
_idempotent = {}
_running = set()
def _idempotency_error(message, status):
    return server.json_response({"error": {"type": "idempotency_error", "message": message}},
                                status=status)
@web.middleware
async def idempotency(request, handler):
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    scope = (request.headers.get("Authorization", ""), key)
    sent = (request.path_qs, await request.read())
    # No await from this lookup until the key is marked running: one request at a time gets here.
    saved = _idempotent.get(scope)
    if saved is None:
        if scope in _running:
            return _idempotency_error(
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still going "
                f"through): {key}. Please try again later.", 409)
        _running.add(scope)
        try:
            delay = min(int(request.headers.get("Localstripe-Test-Delay", "0") or 0), 5000)
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            response = await handler(request)
            _idempotent[scope] = (sent, response.status, response.body)
        finally:
            _running.discard(scope)
        return response
    if saved[0] != sent:
        return _idempotency_error(
            "Keys for idempotent requests can only be used with the same parameters they were "
            "first used with.", 400)
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
