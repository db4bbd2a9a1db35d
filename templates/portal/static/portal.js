// The WebAuthn ceremony of the portal's register page and of the console's passkey step: ask the server for options, let the phone make (or
// use) the passkey, send the answer back. Plain JavaScript, no library; loaded from this
// origin only (the Content-Security-Policy allows nothing else).
(function () {
  "use strict";
  var button = document.getElementById("ceremony");
  if (!button) return;
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var errorBox = document.getElementById("error");
  var restart = document.getElementById("restart");

  function b64(buffer) {
    var bytes = new Uint8Array(buffer), text = "";
    for (var i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function unb64(text) {
    var plain = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    var bytes = new Uint8Array(plain.length);
    for (var i = 0; i < plain.length; i++) bytes[i] = plain.charCodeAt(i);
    return bytes.buffer;
  }
  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (json) {
        if (!r.ok) { var e = new Error("refused"); e.server = json; throw e; }
        return json;
      });
    });
  }
  function register(options) {
    var pk = options.publicKey;
    pk.challenge = unb64(pk.challenge);
    pk.user.id = unb64(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = unb64(c.id); });
    return navigator.credentials.create({ publicKey: pk }).then(function (cred) {
      return {
        id: cred.id, rawId: b64(cred.rawId), type: cred.type,
        extensions: cred.getClientExtensionResults(),
        response: {
          attestationObject: b64(cred.response.attestationObject),
          clientDataJSON: b64(cred.response.clientDataJSON),
          transports: cred.response.getTransports ? cred.response.getTransports() : null
        }
      };
    });
  }
  function signIn(options) {
    var pk = options.publicKey;
    pk.challenge = unb64(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = unb64(c.id); });
    return navigator.credentials.get({ publicKey: pk }).then(function (cred) {
      return {
        id: cred.id, rawId: b64(cred.rawId), type: cred.type,
        extensions: cred.getClientExtensionResults(),
        response: {
          authenticatorData: b64(cred.response.authenticatorData),
          clientDataJSON: b64(cred.response.clientDataJSON),
          signature: b64(cred.response.signature),
          userHandle: cred.response.userHandle ? b64(cred.response.userHandle) : null
        }
      };
    });
  }
  function show(error) {
    var text, code;
    if (error.server && error.server.error) {
      text = error.server.error.message; code = error.server.error.code;
    } else if (error.name === "NotAllowedError" || error.name === "AbortError") {
      text = button.dataset.cancelled; code = "cancelled";
    } else if (error.name && error.name !== "TypeError") {
      text = button.dataset.authenticatorError; code = "authenticator_error";
    } else {
      text = button.dataset.networkError; code = "network_error";
    }
    errorBox.textContent = text;
    errorBox.dataset.code = code;
    errorBox.hidden = false;
    restart.hidden = false;
    button.disabled = false;
  }
  button.addEventListener("click", function () {
    button.disabled = true;
    errorBox.hidden = true;
    var ceremony = button.dataset.mode === "register" ? register : signIn;
    post(button.dataset.start || "/portal/ceremony/start", {})
      .then(ceremony)
      .then(function (answer) { return post(button.dataset.finish || "/portal/ceremony/finish", answer); })
      .then(function (done) { window.location.assign(done.next); })
      .catch(show);
  });
})();
