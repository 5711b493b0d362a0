BEGIN TRANSACTION;
CREATE TABLE cursors (
    name    TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    updated REAL NOT NULL
);
INSERT INTO "cursors" VALUES('rollup',30,1.79632181189124965669e+09);
CREATE TABLE dead_letters (
    id       INTEGER PRIMARY KEY,
    received REAL NOT NULL,
    topic    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    payload  BLOB NOT NULL
);
INSERT INTO "dead_letters" VALUES(1,1795777822.0,'community/y/wearable/old-w1/telemetry','not_json','x',X'7B6E6F7065');
CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    community   TEXT,
    compound    TEXT,
    building    TEXT,
    unit        TEXT,
    floor       INTEGER,
    room        TEXT,
    resident_id TEXT,
    name        TEXT,
    registered  INTEGER NOT NULL DEFAULT 0,
    first_seen  REAL,
    last_seen   REAL,
    online      INTEGER,
    state_since REAL,
    fw          TEXT,
    battery     REAL
);
INSERT INTO "devices" VALUES('wr-00001','wearable','y',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1795777824.0,1795777824.0,NULL,NULL,NULL,81.0);
INSERT INTO "devices" VALUES('smk-0001','smoke','y',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1795777823.0,1795777823.0,NULL,NULL,NULL,90.0);
INSERT INTO "devices" VALUES('gt-1','gate','y',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1795777825.0,1795777825.0,NULL,NULL,NULL,NULL);
INSERT INTO "devices" VALUES('wr-1','wearable','y',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1795777965.0,1795777965.0,NULL,NULL,NULL,NULL);
INSERT INTO "devices" VALUES('old-w1','wearable','y',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1795778033.0,1795778122.0,1,1795778033.0,'1.2.3',80.0);
INSERT INTO "devices" VALUES('old-s1','smoke','y',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1795778034.0,1795778035.0,NULL,NULL,NULL,NULL);
INSERT INTO "devices" VALUES('old-g1','gate','y',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,1795778037.0,1795778037.0,NULL,NULL,NULL,NULL);
CREATE TABLE readings (
    id        INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    stream    TEXT NOT NULL,
    ts        REAL NOT NULL,
    received  REAL NOT NULL,
    seq       INTEGER,
    dedup     TEXT,
    event     TEXT,
    ts_flag   TEXT,
    payload   TEXT NOT NULL
);
INSERT INTO "readings" VALUES(1,'wr-00001','wearable','telemetry',1795777822.0,1795777822.0,1234,'s1234',NULL,NULL,'{"ts": 1795777822000, "seq": 1234, "heart_rate": 72, "spo2": 97.5, "skin_temp_c": 33.1, "steps": 4021, "battery": 81.0, "worn": true, "lat": 36.0611, "lon": 103.8343}');
INSERT INTO "readings" VALUES(2,'smk-0001','smoke','telemetry',1795744800.0,1795777823.0,99,'s99@1795744800.0',NULL,NULL,'{"ts": "2026-11-27T10:00:00+08:00", "seq": 99, "obscuration_pct_m": 0.1, "temperature_c": 22.5, "co_ppm": 0, "battery": 90}');
INSERT INTO "readings" VALUES(3,'wr-00001','wearable','event',1795777824.0,1795777824.0,1235,'s1235','fall',NULL,'{"seq": 1235, "event": "fall"}');
INSERT INTO "readings" VALUES(4,'gt-1','gate','event',1795777825.0,1795777825.0,5,'s5','granted',NULL,'{"seq": 5, "event": "granted", "direction": "in", "method": "card", "credential": "c"}');
INSERT INTO "readings" VALUES(5,'wr-1','wearable','telemetry',1795777926.0,1795777926.0,NULL,NULL,NULL,NULL,'{"x": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}');
INSERT INTO "readings" VALUES(6,'wr-1','wearable','telemetry',1795777932.0,1795777932.0,NULL,NULL,NULL,NULL,'{"steps": 9007199254740991}');
INSERT INTO "readings" VALUES(7,'wr-1','wearable','telemetry',1795777938.0,1795777938.0,NULL,NULL,NULL,NULL,'{"x": 1e-400}');
INSERT INTO "readings" VALUES(8,'wr-1','wearable','telemetry',1795777947.0,1795777947.0,NULL,NULL,NULL,NULL,'{"a": ":x", "heart_rate": 70}');
INSERT INTO "readings" VALUES(9,'wr-1','wearable','telemetry',1795777948.0,1795777948.0,NULL,NULL,NULL,NULL,'{"a": " :x", "b": 1}');
INSERT INTO "readings" VALUES(10,'wr-1','wearable','telemetry',1795777953.0,1795777953.0,NULL,NULL,NULL,NULL,'{"note": "\ud83d\ude00"}');
INSERT INTO "readings" VALUES(11,'wr-1','wearable','telemetry',1795777955.0,1795777955.0,NULL,NULL,NULL,NULL,'{"heart_rate": 70}');
INSERT INTO "readings" VALUES(12,'wr-1','wearable','telemetry',1795777958.0,1795777958.0,NULL,NULL,NULL,NULL,'{"note": "a\u0000b"}');
INSERT INTO "readings" VALUES(13,'wr-1','wearable','telemetry',1795777963.0,1795777963.0,NULL,NULL,NULL,'future','{"ts": "9999-12-31T23:59:59-23:59"}');
INSERT INTO "readings" VALUES(14,'wr-1','wearable','telemetry',1795777964.0,1795777964.0,NULL,NULL,NULL,'too_old','{"ts": "0001-01-01T00:00:00+23:59"}');
INSERT INTO "readings" VALUES(15,'wr-1','wearable','telemetry',1795777965.0,1795777965.0,NULL,NULL,NULL,'too_old','{"ts": -9007199254740991}');
INSERT INTO "readings" VALUES(16,'old-w1','wearable','telemetry',1795777817.0,1795778022.0,1,'s1@1795777817.0',NULL,NULL,'{"seq": 1, "ts": 1795777817000, "heart_rate": 71, "spo2": 97, "worn": true, "steps": 3}');
INSERT INTO "readings" VALUES(17,'old-w1','wearable','telemetry',1795738200.25,1795778024.0,2,'s2@1795738200.25',NULL,NULL,'{"seq": 2, "ts": "2026-11-27T08:10:00.250+08:00", "heart_rate": 72.5, "battery": 80.0}');
INSERT INTO "readings" VALUES(18,'old-w1','wearable','telemetry',1795778025.0,1795778025.0,3,'s3',NULL,NULL,'{"seq": 3, "heart_rate": 73, "lat": 31.2, "lon": 121.4, "note": "x", "nested": [1, [2.5, "y"]]}');
INSERT INTO "readings" VALUES(19,'old-w1','wearable','telemetry',1795777818.0,1795778026.0,NULL,'tf053173e7087dd29692cd2a1',NULL,NULL,'{"ts": 1795777818000, "heart_rate": 74}');
INSERT INTO "readings" VALUES(20,'old-w1','wearable','telemetry',1795778028.0,1795778028.0,NULL,NULL,NULL,NULL,'{"heart_rate": 75}');
INSERT INTO "readings" VALUES(21,'old-w1','wearable','telemetry',1795778029.0,1795778029.0,4,'s4',NULL,'future','{"seq": 4, "ts": 1795787822000, "heart_rate": 76}');
INSERT INTO "readings" VALUES(22,'old-w1','wearable','telemetry',1795778030.0,1795778030.0,5,'s5',NULL,'too_old','{"seq": 5, "ts": 1795577822000, "heart_rate": 77}');
INSERT INTO "readings" VALUES(23,'old-w1','wearable','telemetry',1795778031.0,1795778031.0,6,'s6',NULL,NULL,'{"seq": 6, "ts": null, "heart_rate": null, "skin_temp_c": 36.6, "steps": 0}');
INSERT INTO "readings" VALUES(24,'old-w1','wearable','event',1795777819.0,1795778032.0,7,'s7@1795777819.0','fall',NULL,'{"seq": 7, "ts": 1795777819000, "event": "fall"}');
INSERT INTO "readings" VALUES(25,'old-w1','wearable','status',1795778033.0,1795778033.0,NULL,NULL,'online',NULL,'{"state": "online", "fw": "1.2.3"}');
INSERT INTO "readings" VALUES(26,'old-s1','smoke','telemetry',1795778034.0,1795778034.0,1,'s1',NULL,NULL,'{"seq": 1, "obscuration_pct_m": 0.02, "temperature_c": 21.5, "co_ppm": 0}');
INSERT INTO "readings" VALUES(27,'old-s1','smoke','event',1795778035.0,1795778035.0,2,'s2','alarm',NULL,'{"seq": 2, "event": "alarm"}');
INSERT INTO "readings" VALUES(28,'old-g1','gate','event',1795778036.0,1795778036.0,9,'s9','granted',NULL,'{"seq": 9, "event": "granted", "direction": "in", "method": "card", "credential": "c-1"}');
INSERT INTO "readings" VALUES(29,'old-g1','gate','telemetry',1795778037.0,1795778037.0,10,'s10',NULL,NULL,'{"seq": 10}');
INSERT INTO "readings" VALUES(30,'old-w1','wearable','telemetry',1795778122.0,1795778122.0,11,'s11',NULL,NULL,'{"seq": 11, "heart_rate": 78}');
CREATE TABLE rollup_1h (
    series INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    vmin   REAL NOT NULL,
    vmax   REAL NOT NULL,
    vsum   REAL NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (series, bucket)
) WITHOUT ROWID;
INSERT INTO "rollup_1h" VALUES(1,1795777200,0.0,0.0,0.0,1);
INSERT INTO "rollup_1h" VALUES(2,1795777200,0.02,0.02,0.02,1);
INSERT INTO "rollup_1h" VALUES(3,1795777200,21.5,21.5,21.5,1);
INSERT INTO "rollup_1h" VALUES(4,1795737600,80.0,80.0,80.0,1);
INSERT INTO "rollup_1h" VALUES(5,1795737600,72.5,72.5,72.5,1);
INSERT INTO "rollup_1h" VALUES(5,1795777200,71.0,78.0,524.0,7);
INSERT INTO "rollup_1h" VALUES(6,1795777200,36.6,36.6,36.6,1);
INSERT INTO "rollup_1h" VALUES(7,1795777200,97.0,97.0,97.0,1);
INSERT INTO "rollup_1h" VALUES(8,1795777200,0.0,3.0,3.0,2);
INSERT INTO "rollup_1h" VALUES(9,1795777200,1.0,1.0,1.0,1);
INSERT INTO "rollup_1h" VALUES(10,1795744800,90.0,90.0,90.0,1);
INSERT INTO "rollup_1h" VALUES(11,1795744800,0.0,0.0,0.0,1);
INSERT INTO "rollup_1h" VALUES(12,1795744800,0.1,0.1,0.1,1);
INSERT INTO "rollup_1h" VALUES(13,1795744800,22.5,22.5,22.5,1);
INSERT INTO "rollup_1h" VALUES(14,1795777200,81.0,81.0,81.0,1);
INSERT INTO "rollup_1h" VALUES(15,1795777200,72.0,72.0,72.0,1);
INSERT INTO "rollup_1h" VALUES(16,1795777200,33.1,33.1,33.1,1);
INSERT INTO "rollup_1h" VALUES(17,1795777200,97.5,97.5,97.5,1);
INSERT INTO "rollup_1h" VALUES(18,1795777200,4021.0,4021.0,4021.0,1);
INSERT INTO "rollup_1h" VALUES(19,1795777200,1.0,1.0,1.0,1);
INSERT INTO "rollup_1h" VALUES(20,1795777200,70.0,70.0,140.0,2);
INSERT INTO "rollup_1h" VALUES(21,1795777200,9.00719925474099099987e+15,9.00719925474099099987e+15,9.00719925474099099987e+15,1);
CREATE TABLE rollup_1m (
    series INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    vmin   REAL NOT NULL,
    vmax   REAL NOT NULL,
    vsum   REAL NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (series, bucket)
) WITHOUT ROWID;
INSERT INTO "rollup_1m" VALUES(1,1795777980,0.0,0.0,0.0,1);
INSERT INTO "rollup_1m" VALUES(2,1795777980,0.02,0.02,0.02,1);
INSERT INTO "rollup_1m" VALUES(3,1795777980,21.5,21.5,21.5,1);
INSERT INTO "rollup_1m" VALUES(4,1795738200,80.0,80.0,80.0,1);
INSERT INTO "rollup_1m" VALUES(5,1795738200,72.5,72.5,72.5,1);
INSERT INTO "rollup_1m" VALUES(5,1795777800,71.0,74.0,145.0,2);
INSERT INTO "rollup_1m" VALUES(5,1795777980,73.0,77.0,301.0,4);
INSERT INTO "rollup_1m" VALUES(5,1795778100,78.0,78.0,78.0,1);
INSERT INTO "rollup_1m" VALUES(6,1795777980,36.6,36.6,36.6,1);
INSERT INTO "rollup_1m" VALUES(7,1795777800,97.0,97.0,97.0,1);
INSERT INTO "rollup_1m" VALUES(8,1795777800,3.0,3.0,3.0,1);
INSERT INTO "rollup_1m" VALUES(8,1795777980,0.0,0.0,0.0,1);
INSERT INTO "rollup_1m" VALUES(9,1795777800,1.0,1.0,1.0,1);
INSERT INTO "rollup_1m" VALUES(10,1795744800,90.0,90.0,90.0,1);
INSERT INTO "rollup_1m" VALUES(11,1795744800,0.0,0.0,0.0,1);
INSERT INTO "rollup_1m" VALUES(12,1795744800,0.1,0.1,0.1,1);
INSERT INTO "rollup_1m" VALUES(13,1795744800,22.5,22.5,22.5,1);
INSERT INTO "rollup_1m" VALUES(14,1795777800,81.0,81.0,81.0,1);
INSERT INTO "rollup_1m" VALUES(15,1795777800,72.0,72.0,72.0,1);
INSERT INTO "rollup_1m" VALUES(16,1795777800,33.1,33.1,33.1,1);
INSERT INTO "rollup_1m" VALUES(17,1795777800,97.5,97.5,97.5,1);
INSERT INTO "rollup_1m" VALUES(18,1795777800,4021.0,4021.0,4021.0,1);
INSERT INTO "rollup_1m" VALUES(19,1795777800,1.0,1.0,1.0,1);
INSERT INTO "rollup_1m" VALUES(20,1795777920,70.0,70.0,140.0,2);
INSERT INTO "rollup_1m" VALUES(21,1795777920,9.00719925474099099987e+15,9.00719925474099099987e+15,9.00719925474099099987e+15,1);
CREATE TABLE rollup_series (
    id        INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    metric    TEXT NOT NULL,
    UNIQUE (device_id, metric)
);
INSERT INTO "rollup_series" VALUES(1,'old-s1','co_ppm');
INSERT INTO "rollup_series" VALUES(2,'old-s1','obscuration_pct_m');
INSERT INTO "rollup_series" VALUES(3,'old-s1','temperature_c');
INSERT INTO "rollup_series" VALUES(4,'old-w1','battery');
INSERT INTO "rollup_series" VALUES(5,'old-w1','heart_rate');
INSERT INTO "rollup_series" VALUES(6,'old-w1','skin_temp_c');
INSERT INTO "rollup_series" VALUES(7,'old-w1','spo2');
INSERT INTO "rollup_series" VALUES(8,'old-w1','steps');
INSERT INTO "rollup_series" VALUES(9,'old-w1','worn');
INSERT INTO "rollup_series" VALUES(10,'smk-0001','battery');
INSERT INTO "rollup_series" VALUES(11,'smk-0001','co_ppm');
INSERT INTO "rollup_series" VALUES(12,'smk-0001','obscuration_pct_m');
INSERT INTO "rollup_series" VALUES(13,'smk-0001','temperature_c');
INSERT INTO "rollup_series" VALUES(14,'wr-00001','battery');
INSERT INTO "rollup_series" VALUES(15,'wr-00001','heart_rate');
INSERT INTO "rollup_series" VALUES(16,'wr-00001','skin_temp_c');
INSERT INTO "rollup_series" VALUES(17,'wr-00001','spo2');
INSERT INTO "rollup_series" VALUES(18,'wr-00001','steps');
INSERT INTO "rollup_series" VALUES(19,'wr-00001','worn');
INSERT INTO "rollup_series" VALUES(20,'wr-1','heart_rate');
INSERT INTO "rollup_series" VALUES(21,'wr-1','steps');
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
CREATE UNIQUE INDEX readings_dedup ON readings (device_id, dedup);
CREATE INDEX readings_device_ts ON readings (device_id, ts);
CREATE INDEX dead_letters_received ON dead_letters (received);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received);
CREATE INDEX devices_building ON devices (building, kind);
COMMIT;
