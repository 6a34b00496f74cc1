// The demo shop's storefront for browsers: a product page with an order form, the
// form's POST answered 303 to the order's page (the usual post/redirect/get of a shop),
// and that page. It is what a newcomer opens in a browser to watch Floodgate's waiting
// page (README, scripts/run.sh) and what the browser tests submit.
#include "shop.h"

namespace fg::shop {
namespace {

constexpr std::string_view kHtml = "text/html; charset=utf-8";

struct Product {
  std::string_view sku;
  std::string_view name;
  std::string_view price;
};

constexpr Product kCatalogue[] = {
    {"steam-50", "Steam Wallet 50", "$50.00"},
    {"starfall", "Game Key: Starfall", "$29.99"},
    {"music-25", "Music Gift Card 25", "$25.00"},
    {"vpn-12", "VPN 12 months", "$48.00"},
};

constexpr std::string_view kStyle =
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;"
    "color:#1d232b}h1{font-size:1.6rem}label{display:block;margin:.8rem 0 .2rem}"
    "select,input,button{font:inherit;padding:.5rem;width:100%;box-sizing:border-box}"
    "button{margin-top:1rem;background:#1d5fd6;color:#fff;border:0;border-radius:.4rem;cursor:pointer}"
    ".note{color:#5b6470;font-size:.9rem}</style>";

void page_start(std::string& b, std::string_view title) {
  b += "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>";
  b += title;
  b += " · Demo Shop</title>";
  b += kStyle;
  b += "</head><body><main>";
}

void serve_front(Conn* c) {
  std::string& b = c->worker->scratch;
  b.clear();
  page_start(b, "Gift cards");
  b += "<h1>Demo Shop</h1><p>Digital goods, delivered at once.</p>"
       "<form method=\"post\" action=\"/checkout\" id=\"order\">"
       "<label for=\"sku\">Product</label><select id=\"sku\" name=\"sku\">";
  for (const Product& p : kCatalogue) {
    b += "<option value=\"";
    b += p.sku;
    b += "\">";
    b += p.name;
    b += " · ";
    b += p.price;
    b += "</option>";
  }
  b += "</select><label for=\"qty\">Quantity</label>"
       "<input id=\"qty\" name=\"qty\" type=\"number\" min=\"1\" max=\"10\" value=\"1\">"
       "<button type=\"submit\" id=\"buy\">Buy now</button></form>"
       "<p class=\"note\">The order is a form POST to /checkout; the shop answers 303 to the "
       "order's page. Behind Floodgate, a slow checkout route shows the waiting page first.</p>"
       "</main></body></html>";
  respond(c, 200, kHtml, b);
}

void serve_checkout(Conn* c) {
  Shop* s = c->worker->shop;
  s->orders.fetch_add(1, std::memory_order_relaxed);
  const uint64_t id = s->order_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  std::string location = "/orders/o-";
  append_uint(location, id);
  std::string& b = c->worker->scratch;
  b.clear();
  b += "See ";
  b += location;
  respond(c, 303, kText, b, "Location: " + location + "\r\n");
}

void serve_order_page(Conn* c, std::string_view id) {
  uint64_t n = 0;
  if (id.substr(0, 2) != "o-" || !parse_u64(id.substr(2), &n) || n == 0)
    return respond_error(c, 404, "unknown_order", id);
  std::string& b = c->worker->scratch;
  b.clear();
  page_start(b, "Order confirmed");
  b += "<h1 id=\"thanks\">Thank you! Order ";
  b += id;
  b += " is confirmed.</h1><p>Your code is on its way to your inbox.</p>"
       "<p><a href=\"/\">Back to the shop</a></p></main></body></html>";
  respond(c, 200, kHtml, b);
}

}  // namespace

bool serve_storefront(Conn* c, std::string_view path) {
  const Request& r = c->req;
  const bool order_page = path.substr(0, 8) == "/orders/";
  if (path != "/" && path != "/checkout" && !order_page) return false;
  if (path == "/checkout") {
    if (r.is_post()) serve_checkout(c);
    else respond_error(c, 405, "method_not_allowed", {}, "Allow: POST\r\n");
  } else if (!r.is_get()) {
    respond_error(c, 405, "method_not_allowed", {}, "Allow: GET, HEAD\r\n");
  } else if (order_page) {
    serve_order_page(c, path.substr(8));
  } else {
    serve_front(c);
  }
  return true;
}

}  // namespace fg::shop
