// Prompt pieces with no I/O: the memory context section, and the JSON Schema subset that
// structured answers are checked against.
#include <algorithm>
#include <cmath>

#include "agentd/agent/engine.hpp"

namespace agentd::agent {
namespace {

Error invalid(std::string message, std::string param) {
  return Error{400, std::move(message), "invalid_mem_ctx", std::move(param)};
}

std::string scalar_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

}  // namespace

Outcome<std::string> render_mem_ctx(const json& mem) {
  if (mem.is_null()) return std::string();
  if (!mem.is_object()) return invalid("memCtx must be an object {vectors?, graph?}", "memCtx");
  for (const auto& [k, v] : mem.items()) {
    if (k != "vectors" && k != "graph") {
      return invalid("memCtx: unknown key \"" + k + "\" (expected vectors, graph)", "memCtx." + k);
    }
  }
  std::string out;
  if (auto it = mem.find("vectors"); it != mem.end() && !it->is_null()) {
    if (!it->is_array()) return invalid("memCtx.vectors must be an array", "memCtx.vectors");
    if (it->size() > 1000) return invalid("memCtx.vectors: at most 1000 entries", "memCtx.vectors");
    std::string section;
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& hit = (*it)[i];
      std::string where = "memCtx.vectors[" + std::to_string(i) + "]";
      std::string text;
      if (hit.is_string()) {
        text = hit.get<std::string>();
      } else if (hit.is_object() && hit.contains("text") && hit["text"].is_string()) {
        text = hit["text"].get<std::string>();
      } else {
        return invalid(where + " must be a string or an object with a string \"text\"", where);
      }
      section += "- ";
      if (hit.is_object()) {
        if (auto s = hit.find("score"); s != hit.end()) {
          if (!s->is_number()) return invalid(where + ".score must be a number", where + ".score");
          char buf[32];
          std::snprintf(buf, sizeof buf, "(score %.3f) ", s->get<double>());
          section += buf;
        }
        if (auto s = hit.find("source"); s != hit.end() && !s->is_null()) {
          section += "[" + scalar_text(*s) + "] ";
        }
      }
      section += text + "\n";
    }
    if (!section.empty()) out += "### Relevant memories (from the user's memory store)\n" + section;
  }
  if (auto it = mem.find("graph"); it != mem.end() && !it->is_null()) {
    std::string section;
    auto triple = [&section](const json& t, const std::string& where) -> std::optional<Error> {
      if (t.is_array() && t.size() == 3) {
        section += "- " + scalar_text(t[0]) + " " + scalar_text(t[1]) + " " + scalar_text(t[2]) + "\n";
        return std::nullopt;
      }
      if (!t.is_object()) return invalid(where + " must be {subject, predicate, object} or [s, p, o]", where);
      auto s = t.find("subject") != t.end() ? t.find("subject") : t.find("from");
      auto p = t.find("predicate") != t.end() ? t.find("predicate") : t.find("relationType");
      auto o = t.find("object") != t.end() ? t.find("object") : t.find("to");
      if (s == t.end() || p == t.end() || o == t.end()) {
        return invalid(where + " needs subject, predicate and object", where);
      }
      section += "- " + scalar_text(*s) + " " + scalar_text(*p) + " " + scalar_text(*o) + "\n";
      return std::nullopt;
    };
    if (it->is_array()) {
      for (std::size_t i = 0; i < it->size(); ++i) {
        if (auto e = triple((*it)[i], "memCtx.graph[" + std::to_string(i) + "]")) return *e;
      }
    } else if (it->is_object()) {
      for (const auto& [k, v] : it->items()) {
        if (k != "entities" && k != "relations") {
          return invalid("memCtx.graph: unknown key \"" + k + "\" (expected entities, relations)",
                         "memCtx.graph." + k);
        }
        if (!v.is_array()) return invalid("memCtx.graph." + k + " must be an array", "memCtx.graph." + k);
      }
      if (auto e = it->find("entities"); e != it->end()) {
        for (std::size_t i = 0; i < e->size(); ++i) {
          const json& ent = (*e)[i];
          std::string where = "memCtx.graph.entities[" + std::to_string(i) + "]";
          if (!ent.is_object() || !ent.contains("name")) return invalid(where + " needs a name", where);
          section += "- " + scalar_text(ent["name"]);
          if (ent.contains("entityType")) section += " (" + scalar_text(ent["entityType"]) + ")";
          if (ent.contains("type")) section += " (" + scalar_text(ent["type"]) + ")";
          if (auto obs = ent.find("observations"); obs != ent.end() && obs->is_array()) {
            std::string joined;
            for (const auto& ob : *obs) joined += (joined.empty() ? "" : "; ") + scalar_text(ob);
            section += ": " + joined;
          }
          section += "\n";
        }
      }
      if (auto r = it->find("relations"); r != it->end()) {
        for (std::size_t i = 0; i < r->size(); ++i) {
          if (auto e = triple((*r)[i], "memCtx.graph.relations[" + std::to_string(i) + "]")) return *e;
        }
      }
    } else {
      return invalid("memCtx.graph must be an array of facts or {entities, relations}", "memCtx.graph");
    }
    if (!section.empty()) out += "### Known facts (from the user's knowledge graph)\n" + section;
  }
  if (!out.empty()) {
    out = "## Memory context\nWhat the user's client remembers that may bear on this request. "
          "Use it when relevant; it may be incomplete or out of date.\n" + out;
  }
  return out;
}

std::string validate_json(const json& schema, const json& value) {
  std::function<std::string(const json&, const json&, const std::string&)> check =
      [&check](const json& s, const json& v, const std::string& at) -> std::string {
    if (!s.is_object()) return {};
    std::string where = at.empty() ? "/" : at;
    if (auto t = s.find("type"); t != s.end()) {
      auto is = [&v](const std::string& type) {
        if (type == "object") return v.is_object();
        if (type == "array") return v.is_array();
        if (type == "string") return v.is_string();
        if (type == "integer") {
          return v.is_number_integer() ||
                 (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
        }
        if (type == "number") return v.is_number();
        if (type == "boolean") return v.is_boolean();
        if (type == "null") return v.is_null();
        return true;
      };
      bool ok = false;
      if (t->is_string()) {
        ok = is(t->get<std::string>());
      } else if (t->is_array()) {
        for (const auto& one : *t) ok = ok || (one.is_string() && is(one.get<std::string>()));
      } else {
        ok = true;
      }
      if (!ok) return where + ": expected " + t->dump() + ", got " + std::string(v.type_name());
    }
    if (auto e = s.find("enum"); e != s.end() && e->is_array()) {
      if (std::find(e->begin(), e->end(), v) == e->end()) {
        return where + ": " + v.dump() + " is not one of " + e->dump();
      }
    }
    if (auto c = s.find("const"); c != s.end() && *c != v) return where + ": expected " + c->dump();
    if (v.is_number()) {
      double x = v.get<double>();
      if (auto m = s.find("minimum"); m != s.end() && m->is_number() && x < m->get<double>()) {
        return where + ": below the minimum " + m->dump();
      }
      if (auto m = s.find("maximum"); m != s.end() && m->is_number() && x > m->get<double>()) {
        return where + ": above the maximum " + m->dump();
      }
    }
    if (v.is_string()) {
      // JSON Schema lengths count characters: UTF-8 continuation bytes are not counted.
      const auto& str = v.get_ref<const std::string&>();
      auto n = static_cast<std::size_t>(std::count_if(
          str.begin(), str.end(), [](char ch) { return (static_cast<unsigned char>(ch) & 0xC0) != 0x80; }));
      if (auto m = s.find("minLength"); m != s.end() && m->is_number() && n < m->get<std::size_t>()) {
        return where + ": shorter than " + m->dump();
      }
      if (auto m = s.find("maxLength"); m != s.end() && m->is_number() && n > m->get<std::size_t>()) {
        return where + ": longer than " + m->dump();
      }
    }
    if (v.is_array()) {
      if (auto m = s.find("minItems"); m != s.end() && m->is_number() && v.size() < m->get<std::size_t>()) {
        return where + ": fewer than " + m->dump() + " items";
      }
      if (auto m = s.find("maxItems"); m != s.end() && m->is_number() && v.size() > m->get<std::size_t>()) {
        return where + ": more than " + m->dump() + " items";
      }
      if (auto items = s.find("items"); items != s.end()) {
        for (std::size_t i = 0; i < v.size(); ++i) {
          if (auto e = check(*items, v[i], at + "/" + std::to_string(i)); !e.empty()) return e;
        }
      }
    }
    if (v.is_object()) {
      if (auto req = s.find("required"); req != s.end() && req->is_array()) {
        for (const auto& k : *req) {
          if (k.is_string() && !v.contains(k.get<std::string>())) {
            return where + ": missing required property \"" + k.get<std::string>() + "\"";
          }
        }
      }
      auto props = s.find("properties");
      for (const auto& [k, sub] : v.items()) {
        if (props != s.end() && props->is_object() && props->contains(k)) {
          if (auto e = check((*props)[k], sub, at + "/" + k); !e.empty()) return e;
        } else if (auto ap = s.find("additionalProperties"); ap != s.end()) {
          if (ap->is_boolean() && !ap->get<bool>()) return where + ": unexpected property \"" + k + "\"";
          if (ap->is_object()) {
            if (auto e = check(*ap, sub, at + "/" + k); !e.empty()) return e;
          }
        }
      }
    }
    return {};
  };
  return check(schema, value, "");
}

}  // namespace agentd::agent
