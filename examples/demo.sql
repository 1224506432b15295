-- Demo tables for `make run`: a plain table, a composite key, every common type, a view.
CREATE TABLE IF NOT EXISTS users (
    id         serial PRIMARY KEY,
    name       varchar(100) NOT NULL,
    email      varchar(200),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (name, email)
SELECT 'user' || g, 'user' || g || '@example.com' FROM generate_series(1, 1000) g
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS products (
    category   varchar(50),
    product_id integer,
    name       varchar(200),
    price      numeric(10, 2),
    tags       text[],
    attributes jsonb,
    PRIMARY KEY (category, product_id)
);
INSERT INTO products VALUES
    ('electronics', 456, 'Headphones', 99.90, '{audio,wireless}', '{"color": "black"}'),
    ('books', 1, 'SQL for Everyone', 24.00, '{sql}', '{"pages": 320}')
ON CONFLICT DO NOTHING;

CREATE OR REPLACE VIEW user_emails AS SELECT id, email FROM users;

CREATE SCHEMA IF NOT EXISTS sales;
CREATE TABLE IF NOT EXISTS sales.orders (
    id        integer PRIMARY KEY,
    user_id   integer NOT NULL REFERENCES users (id),
    total     numeric(10, 2) NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sales.orders (id, user_id, total)
SELECT g, 1 + g % 1000, (g * 7 % 500) + 0.99 FROM generate_series(1, 100) g
ON CONFLICT DO NOTHING;
