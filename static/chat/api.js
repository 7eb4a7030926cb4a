// The HTTP API: JSON in and out, the CSRF token, and a sign-in page on 401.

import { config } from "./state.js";

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return "";
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = cookie("csrftoken");
  const res = await fetch(config.api + path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (res.status === 401) {
    goToLogin();
  }
  if (!res.ok) {
    throw new Error((data && (data.detail || data.message)) || `Request failed (${res.status}).`);
  }
  return data;
}

export function goToLogin() {
  const next = encodeURIComponent(location.pathname);
  location.assign(`${config.login_url}?next=${next}`);
}
