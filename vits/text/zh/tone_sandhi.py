"""Mandarin tone sandhi on jieba words (the PaddleSpeech rules Bert-VITS2 uses, spec §7.5).

Works on (word, pos) pairs from jieba.posseg and per-character finals in pypinyin TONE3 form
("ao3"); punctuation characters carry the character itself as their "final" and are never changed.
"""

from __future__ import annotations

from functools import lru_cache

# Words whose last syllable is read in the neutral tone (conventional usage).
MUST_NEUTRAL = set("""
麻烦 麻利 鸳鸯 高粱 骨头 骆驼 马虎 首饰 馒头 馄饨 风筝 难为 队伍 阔气 闺女 门道 锄头 铺盖 铃铛 铁匠 钥匙 里脊
里头 部分 那么 道士 造化 迷糊 连累 这么 这个 运气 过去 软和 转悠 踏实 跳蚤 跟头 趔趄 财主 豆腐 讲究 记性 记号
认识 规矩 见识 裁缝 补丁 衣裳 衣服 衙门 街坊 行李 行当 蛤蟆 蘑菇 薄荷 葫芦 葡萄 萝卜 荸荠 苗条 苗头 苍蝇 芝麻
舒服 舒坦 舌头 自在 膏药 脾气 脑袋 脊梁 能耐 胳膊 胭脂 胡萝 胡琴 胡同 聪明 耽误 耽搁 耷拉 耳朵 老爷 老实 老婆
老头 老太 翻腾 罗嗦 罐头 编辑 结实 红火 累赘 糨糊 糊涂 精神 粮食 簸箕 篱笆 算计 算盘 答应 笤帚 笑语 笑话 窟窿
窝囊 窗户 稳当 稀罕 称呼 秧歌 秀气 秀才 福气 祖宗 砚台 码头 石榴 石头 石匠 知识 眼睛 眯缝 眨巴 眉毛 相声 盘算
白净 痢疾 痛快 疟疾 疙瘩 疏忽 畜生 生意 甘蔗 琵琶 琢磨 琉璃 玻璃 玫瑰 玄乎 狐狸 状元 特务 牲口 牙碜 牌楼 爽快
爱人 热闹 烧饼 烟筒 烂糊 点心 炊帚 灯笼 火候 漂亮 滑溜 溜达 温和 清楚 消息 浪头 活泼 比方 正经 欺负 模糊 槟榔
棺材 棒槌 棉花 核桃 栅栏 柴火 架势 枕头 枇杷 机灵 本事 木头 木匠 朋友 月饼 月亮 暖和 明白 时候 新鲜 故事 收拾
收成 提防 挖苦 挑剔 指甲 指头 拾掇 拳头 拨弄 招牌 招呼 抬举 护士 折腾 扫帚 打量 打算 打点 打扮 打听 打发 扎实
扁担 戒指 懒得 意识 意思 情形 悟性 怪物 思量 怎么 念头 念叨 快活 忙活 志气 心思 得罪 张罗 弟兄 开通 应酬 庄稼
干事 帮手 帐篷 希罕 师父 师傅 巴结 巴掌 差事 工夫 岁数 屁股 尾巴 少爷 小气 小伙 将就 对头 对付 寡妇 家伙 客气
实在 官司 学问 学生 字号 嫁妆 媳妇 媒人 婆家 娘家 委屈 姑娘 姐夫 妯娌 妥当 妖精 奴才 女婿 头发 太阳 大爷 大方
大意 大夫 多少 多么 外甥 壮实 地道 地方 在乎 困难 嘴巴 嘱咐 嘟囔 嘀咕 喜欢 喇嘛 喇叭 商量 唾沫 哑巴 哈欠 哆嗦
咳嗽 和尚 告诉 告示 含糊 吓唬 后头 名字 名堂 合同 吆喝 叫唤 口袋 厚道 厉害 千斤 包袱 包涵 匀称 勤快 动静 动弹
功夫 力气 前头 刺猬 刺激 别扭 利落 利索 利害 分析 出息 凑合 凉快 冷战 冤枉 冒失 养活 关系 先生 兄弟 便宜 使唤
佩服 作坊 体面 位置 似的 伙计 休息 什么 人家 亲戚 亲家 交情 云彩 事情 买卖 主意 丫头 丧气 两口 东西 东家 世故
不由 不在 下水 下巴 上头 上司 丈夫 丈人 一辈 那个 菩萨 父亲 母亲 咕噜 邋遢 费用 冤家 甜头 介绍 荒唐 大人 泥鳅
幸福 熟悉 计划 扑腾 蜡烛 姥爷 照顾 喉咙 吉他 弄堂 蚂蚱 凤凰 拖沓 寒碜 糟蹋 倒腾 报复 逻辑 盘缠 喽啰 牢骚 咖喱
扫把 惦记
""".split())

# Words that look like neutral-tone patterns (reduplication, -子) but keep their full tone.
MUST_NOT_NEUTRAL = set("""
男子 女子 分子 原子 量子 莲子 石子 瓜子 电子 人人 虎虎 幺幺 干嘛 学子 哈哈 袅袅 局地 以下 娃哈哈 花花草草
留得 耕地 熙熙 攘攘 卵子 死死 冉冉 恳恳 佼佼 吵吵 整整 莘莘 落地 算子 家家户户 青青 天天 常常 慢慢 好好 刚刚
渐渐 偷偷 悄悄 往往 久久 默默 纷纷 处处 时时 年年 统统 仅仅 稍稍 频频 连连 白白 早早 万万 匆匆 轻轻 深深 紧紧
狠狠 静静 明明 隐隐 微微 暗暗 一一
""".split())

_PUNCT = "：，；。？！“”‘’':,;.?!"


def _is_syllable(final: str) -> bool:
    return bool(final) and final[-1] in "12345"


def _set_tone(finals: list[str], i: int, tone: str) -> None:
    if 0 <= i < len(finals) and _is_syllable(finals[i]):
        finals[i] = finals[i][:-1] + tone


def _tone(final: str) -> str:
    return final[-1] if _is_syllable(final) else ""


def _all_three(finals: list[str]) -> bool:
    return all(_tone(f) == "3" for f in finals)


@lru_cache(maxsize=4096)
def _split_word(word: str) -> tuple[str, str]:
    """Split a word into (first, rest) around its shortest search-mode sub-word (jieba)."""
    import jieba

    parts = sorted(jieba.cut_for_search(word), key=len)
    first = parts[0] if parts else word
    if word.find(first) == 0:
        return first, word[len(first):]
    return word[: len(word) - len(first)], first


def _neutral_sandhi(word: str, pos: str, finals: list[str]) -> list[str]:
    # reduplicated nouns/verbs/adjectives take the neutral tone on the repeat (奶奶, 试试)
    # only the word's first pair (看看, 说说看) or an AABB word (干干净净): 银行行长 has no repeat
    aabb = len(word) == 4 and word[0] == word[1] and word[2] == word[3]
    for j in range(1, len(word)):
        if word[j] != word[j - 1] or word in MUST_NOT_NEUTRAL or word[:2] in MUST_NOT_NEUTRAL:
            continue
        if (j == 1 or aabb) and (pos[:1] in ("n", "v", "a") or (len(word) == 3 and j == 1 and pos == "l")):
            _set_tone(finals, j, "5")
    ge = word.find("个")
    last = len(word) - 1
    if word and word[-1] in "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶":
        _set_tone(finals, last, "5")
    elif word and word[-1] in "的地得" and not (word == "得" and pos == "v"):  # 得 the verb: de2/dei3
        _set_tone(finals, last, "5")
    elif len(word) == 1 and word in "了着过" and pos in ("ul", "uz", "ug"):
        _set_tone(finals, last, "5")
    elif len(word) > 1 and word[-1] in "们子" and pos in ("r", "n") and word not in MUST_NOT_NEUTRAL:
        _set_tone(finals, last, "5")
    elif len(word) > 1 and word[-1] in "上下里" and pos in ("s", "l", "f"):
        _set_tone(finals, last, "5")
    elif len(word) > 1 and word[-1] in "来去" and word[-2] in "上下进出回过起开":
        _set_tone(finals, last, "5")
    elif (ge >= 1 and (word[ge - 1].isnumeric() or word[ge - 1] in "几有两半多各整每做是")) or word == "个":
        _set_tone(finals, ge, "5")
    elif word in MUST_NEUTRAL or word[-2:] in MUST_NEUTRAL:
        _set_tone(finals, last, "5")

    first, rest = _split_word(word)
    for start, part in ((0, first), (len(first), rest)):
        if part and (part in MUST_NEUTRAL or part[-2:] in MUST_NEUTRAL):
            _set_tone(finals, start + len(part) - 1, "5")
    return finals


def _bu_sandhi(word: str, finals: list[str]) -> list[str]:
    if len(word) == 3 and word[1] == "不":
        _set_tone(finals, 1, "5")  # 看不懂
    else:
        for i, char in enumerate(word):
            if char == "不" and i + 1 < len(word) and _tone(finals[i + 1]) == "4":
                _set_tone(finals, i, "2")  # 不怕
    return finals


def _yi_sandhi(word: str, finals: list[str]) -> list[str]:
    if "一" in word and all(c.isnumeric() and c not in "百千万亿" for c in word if c != "一"):
        return finals  # digit sequences (一零零) keep yi1; 一万, 一千 take the sandhi
    if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:
        _set_tone(finals, 1, "5")  # 看一看
    elif word.startswith("第一"):
        _set_tone(finals, 1, "1")
    else:
        for i, char in enumerate(word):
            if char == "一" and i + 1 < len(word):
                if _tone(finals[i + 1]) == "4":
                    _set_tone(finals, i, "2")
                elif word[i + 1] not in _PUNCT:
                    _set_tone(finals, i, "4")
    return finals


def _three_sandhi(word: str, finals: list[str]) -> list[str]:
    if len(word) == 2 and _all_three(finals):
        _set_tone(finals, 0, "2")
    elif len(word) == 3:
        first, _ = _split_word(word)
        if _all_three(finals):
            if len(first) == 2:  # 蒙古/包
                _set_tone(finals, 0, "2")
                _set_tone(finals, 1, "2")
            elif len(first) == 1:  # 纸/老虎
                _set_tone(finals, 1, "2")
        else:
            head, tail = finals[: len(first)], finals[len(first):]
            for i, sub in enumerate((head, tail)):
                if len(sub) == 2 and _all_three(sub):
                    _set_tone(sub, 0, "2")  # 所有/人
                elif i == 1 and sub and not _all_three(sub) and _tone(sub[0]) == "3" and head \
                        and _tone(head[-1]) == "3":
                    _set_tone(head, len(head) - 1, "2")  # 好/喜欢
            finals = head + tail
    elif len(word) == 4:  # idioms: two halves of two
        head, tail = finals[:2], finals[2:]
        for sub in (head, tail):
            if _all_three(sub):
                _set_tone(sub, 0, "2")
        finals = head + tail
    return finals


def modified_tone(word: str, pos: str, finals: list[str]) -> list[str]:
    """Apply 不, 一, neutral-tone and third-tone sandhi to the finals of one word; returns new finals."""
    finals = list(finals)
    finals = _bu_sandhi(word, finals)
    finals = _yi_sandhi(word, finals)
    finals = _neutral_sandhi(word, pos, finals)
    return _three_sandhi(word, finals)


# --- merging jieba words before sandhi -------------------------------------------------------------


def _merge_bu(seg: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    pending = False
    for word, pos in seg:
        if pending:
            word = "不" + word
            pending = False
        if word == "不":
            pending = True
            continue
        out.append([word, pos])
    if pending:
        out.append(["不", "d"])
    return out


def _merge_yi(seg: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    i = 0
    while i < len(seg):
        word, pos = seg[i]
        # verb 一 verb -> one word (听一听)
        if out and word == "一" and i + 1 < len(seg) and seg[i + 1][0] == out[-1][0] and out[-1][1] == "v" \
                and seg[i - 1][0] == out[-1][0]:
            out[-1][0] = out[-1][0] + "一" + out[-1][0]
            i += 2
            continue
        out.append([word, pos])
        i += 1
    merged: list[list[str]] = []
    for word, pos in out:
        if merged and merged[-1][0] == "一":
            merged[-1][0] += word  # a lone 一 joins the following word
        else:
            merged.append([word, pos])
    return merged


def _merge_reduplication(seg: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    for word, pos in seg:
        if out and word == out[-1][0]:
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def _merge_three_tones(seg: list[list[str]], finals_of, whole: bool) -> list[list[str]]:
    finals = [finals_of(w) for w, _ in seg]
    out: list[list[str]] = []
    merged_last = [False] * len(seg)
    for i, (word, pos) in enumerate(seg):
        if i > 0 and not merged_last[i - 1]:
            prev, cur = finals[i - 1], finals[i]
            if whole:
                joinable = bool(prev) and bool(cur) and _all_three(prev) and _all_three(cur)
            else:
                joinable = bool(prev) and bool(cur) and _tone(prev[-1]) == "3" and _tone(cur[0]) == "3"
            prev_word = seg[i - 1][0]
            # a reduplication (想想) keeps its own word so its repeat can take the neutral tone
            if joinable and not (len(prev_word) == 2 and prev_word[0] == prev_word[1]) \
                    and not (len(word) == 2 and word[0] == word[1]) and len(prev_word) + len(word) <= 3:
                out[-1][0] += word
                merged_last[i] = True
                continue
        out.append([word, pos])
    return out


def _merge_er(seg: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    for word, pos in seg:
        if out and word == "儿" and out[-1][0] != "#":
            out[-1][0] += word
        else:
            out.append([word, pos])
    return out


def pre_merge(seg: list[tuple[str, str]], finals_of) -> list[list[str]]:
    """Merge jieba words the sandhi rules treat as one (不X, X一X, 一X, XX, third-tone runs, X儿).

    Args:
        seg: (word, pos) pairs from jieba.posseg.
        finals_of: word -> list of TONE3 finals before sandhi.
    Returns [word, pos] lists.
    """
    words = [[w, p] for w, p in seg]
    words = _merge_bu(words)
    words = _merge_yi(words)
    words = _merge_reduplication(words)
    words = _merge_three_tones(words, finals_of, whole=True)
    words = _merge_three_tones(words, finals_of, whole=False)
    return _merge_er(words)
